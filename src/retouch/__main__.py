"""``python -m retouch`` (and ``accelerate launch -m retouch``)."""

from retouch.cli import main

raise SystemExit(main())
