"""What both command lines (minidocker's and minidocker-runc's) need of argparse."""

import argparse
import os


class Formatter(argparse.HelpFormatter):
    """argparse imports `shutil` (3 ms) to learn the terminal's width for help
    text, even when no help is printed; os knows the width too."""

    def __init__(self, prog: str) -> None:
        try:
            width = os.get_terminal_size().columns - 2
        except OSError:
            width = 78
        super().__init__(prog, width=width)
