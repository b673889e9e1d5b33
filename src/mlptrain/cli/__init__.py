"""The commands: argparse -> one library call -> message and exit status. Parsing and
printing only; nothing in the library imports cli."""
