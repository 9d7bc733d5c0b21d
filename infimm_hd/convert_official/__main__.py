"""`python -m infimm_hd.convert_official SRC DST`: the converter's command line (see `command_line.main`)."""

from .command_line import main

raise SystemExit(main())
