"""`vreid demo` trains bot from the ImageNet start and from scratch on the same split and prints both."""
import json

import yaml

from vreid.demo import DemoSettings, run_demo

TINY = ["schedule.epochs=1", "data.ids_per_batch=4", "data.images_per_id=2", "data.workers=0",
        "model.backbone.name=timm:mobilenetv2_100", "model.backbone.pretrained=imagenet"]


def test_demo_compares_imagenet_start_with_scratch_on_one_split(tmp_path, capsys):
    out = tmp_path / "demo"
    summary = run_demo(DemoSettings(output=str(out), ids=12, cameras=3, size=32, workers=0, preset="crossview"),
                       TINY)
    printed = capsys.readouterr().out
    assert "bot, imagenet start" in printed and "bot, scratch start" in printed and "random ranking" in printed
    assert "bot, imagenet start vs bot, scratch start: " in printed
    start = yaml.safe_load((out / "bot" / "config.yaml").read_text())["model"]["backbone"]["pretrained"]
    scratch = yaml.safe_load((out / "bot-scratch" / "config.yaml").read_text())["model"]["backbone"]["pretrained"]
    assert (start, scratch) == ("imagenet", None)
    saved = json.loads((out / "demo_results.json").read_text())
    assert saved["bot"]["mAP"] == summary["bot"]["mAP"] and "mAP" in saved["bot_scratch"]
    assert saved["bot"]["num_queries"] == saved["bot_scratch"]["num_queries"]  # the same split
    assert saved["bot"]["mAP"] != saved["bot_scratch"]["mAP"]
