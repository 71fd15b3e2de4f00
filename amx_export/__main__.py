import sys

try:  # Ctrl-C while the CLI is still importing: one line, not a traceback
    from .cli import main
except KeyboardInterrupt:
    print("interrupted", file=sys.stderr)
    sys.exit(130)

sys.exit(main())
