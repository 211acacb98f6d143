"""Error classes that tell a retryable failure from one that needs a fix first."""


class EvaluationError(Exception):
    """Base class of the errors this package raises."""


class PermanentError(EvaluationError):
    """A failure that a retry cannot fix, such as rejected keys or an invalid setting."""


class ConfigurationError(PermanentError):
    """An invalid setting or parameter value."""


class AuthenticationError(PermanentError):
    """A server rejected the credentials of a connection."""


class TransientError(EvaluationError):
    """A failure that may pass on retry, such as a timeout or a 5xx reply."""


class ScoreWriteRejected(EvaluationError):
    """The score endpoint accepted only part of a batch (HTTP 207).

    Retrying is safe because every score has a deterministic id: the accepted scores are
    replaced in place and the rejected ones are sent again.
    """


class JudgeReplyError(EvaluationError):
    """A judge reply that cannot be parsed into a valid verdict."""
