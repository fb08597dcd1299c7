"""The contracts: wire models, statuses, errors and the runner protocol. Imports nothing of the rest."""

from .errors import *  # noqa: F403
from .errors import __all__ as _errors
from .fields import *  # noqa: F403
from .fields import __all__ as _fields
from .messages import *  # noqa: F403
from .messages import __all__ as _messages
from .runner import *  # noqa: F403
from .runner import __all__ as _runner
from .status import *  # noqa: F403
from .status import __all__ as _status
from .trace import *  # noqa: F403
from .trace import __all__ as _trace
from .wire import *  # noqa: F403
from .wire import __all__ as _wire

__all__ = [*_errors, *_fields, *_messages, *_runner, *_status, *_trace, *_wire]
