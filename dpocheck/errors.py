"""The toolkit's error hierarchy and what each error means to the command line.

* :class:`InputError` (a ``ValueError``): bad input — a file, record, field or argument the user can fix. The
  message names the file, record and field. ``dpocheck`` prints it as one line and exits with status 2.
* :class:`NumericalError` (an ``ArithmeticError``): the input is valid but a computation cannot give a trusted
  number (a solve that did not converge, a value that cannot be represented). Exit status 3.

Exit status 1 is reserved for a proofs regression (``dpocheck proofs``: a claim's verdict differs from the
expected one). Every reader's own error type (``RecordError``, ``ScoringError``, ``ScoresError``, …) derives from
:class:`InputError`, so the CLI needs one rule for all of them.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_REGRESSION = 1
EXIT_INPUT = 2
EXIT_NUMERICAL = 3


class InputError(ValueError):
    """Bad input (file, record, field or argument); the message names which. CLI exit status 2."""


class NumericalError(ArithmeticError):
    """Valid input for which no trusted number can be computed. CLI exit status 3."""
