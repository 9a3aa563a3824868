"""Keeping stdout for results: commands whose stdout is read by programs (`--json`) compute inside
`library_output_to_stderr`, then print.

Libraries print while they load: DeepSpeed's logger, for one, attaches a handler to whatever `sys.stdout` is
when `deepspeed` is first imported (accelerate imports it inside `transformers`' `save_pretrained`) and writes
"Setting accelerator to CPU" there. Inside this context such output goes to stderr, for good.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def library_output_to_stderr() -> Iterator[None]:
    with contextlib.redirect_stdout(sys.stderr):
        yield
