import sys

from . import signals

signals.install()  # before the imports: an interrupt during one waits for its end

try:
    from .cli import main

    status = main()
except KeyboardInterrupt:  # came between the import and main's own handling
    print("interrupted", file=sys.stderr)
    status = 130
except signals.Terminated:
    print("terminated", file=sys.stderr)
    status = 143
sys.exit(status)
