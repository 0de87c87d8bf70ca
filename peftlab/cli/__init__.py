"""Owns the `peftlab` command: parse, map flags to config keys, call a recipe, print; the only package knowing the terminal.
May import any package of peftlab (lazily, inside the commands); nothing imports it but __main__."""

from __future__ import annotations

import logging
import os
import sys

from peftlab.cli.commands import COMMANDS
from peftlab.cli.options import build_parser
from peftlab.errors import PeftlabError

__all__ = ["build_parser", "main"]


def _quiet_libraries() -> None:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger("gguf").setLevel(logging.WARNING)  # its writer logs every file it opens
    import transformers

    transformers.utils.logging.disable_progress_bar()


def _refuse(error: PeftlabError) -> int:
    print(f"error: {error}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except PeftlabError as error:  # a flag whose value the parser converts (--columns) was malformed
        return _refuse(error)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not args.debug:
        _quiet_libraries()
    try:
        return COMMANDS[args.command](args)
    except PeftlabError as error:
        return _refuse(error)
    except KeyboardInterrupt:
        print("interrupted; outputs written so far are complete (rerun train with --resume to continue)", file=sys.stderr)
        return 130
    except Exception as error:  # anything unexpected: one line unless --debug
        if args.debug:
            raise
        from peftlab.atomic import write_failure

        reason = write_failure(error)
        if reason:  # disk full, read-only, no permission: the user's to fix, and nothing was replaced
            where = f" {error.filename}" if getattr(error, "filename", None) else ""
            print(f"error: cannot write{where}: {reason}; free space or fix the folder's permissions (or choose another --output), "
                  "then run the command again; earlier outputs are untouched", file=sys.stderr)
            return 2
        print(f"error: unexpected {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''} (rerun with --debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
