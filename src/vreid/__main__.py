"""`python -m vreid ...` is the `vreid` command."""
from vreid.cli.main import main

main()
