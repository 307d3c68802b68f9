"""Losses: label-smoothed cross entropy, batch-hard triplet, center, supervised contrastive."""
from vreid.losses.center import CenterLoss
from vreid.losses.contrastive import SupConLoss
from vreid.losses.softmax import CrossEntropyLabelSmooth
from vreid.losses.triplet import TripletLoss, hard_example_mining, pairwise_distance

__all__ = ["CenterLoss", "SupConLoss", "CrossEntropyLabelSmooth", "TripletLoss", "hard_example_mining",
           "pairwise_distance"]
