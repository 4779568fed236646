"""``python -m bench``: every tab's benchmark and the README table (see bench/run.py)."""
from bench.run import main

main()
