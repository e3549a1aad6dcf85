import sys

from hildlimits._cli import entry

sys.exit(entry())
