"""Errors raised by services: a machine-readable code and a message a person can act on."""
import re

# an absolute file path (POSIX or Windows) or a file URL: never shown to users (it says where the
# server keeps its files and what its folders are called)
_PATH = re.compile(r"(?:file://)?(?:[A-Za-z]:\\|/)(?:[^\s'\"/\\:]+[/\\])+[^\s'\",;:)]*")


def scrub_paths(text: str) -> str:
    """``text`` with every absolute path replaced by ``<path>``: for messages built from exceptions."""
    return _PATH.sub("<path>", text)


class ServiceError(Exception):
    status_code = 400

    def __init__(self, code: str, message: str, *, status_code: int | None = None, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after = retry_after  # seconds, sent as Retry-After (429, 503)
        if status_code is not None:
            self.status_code = status_code

    def as_dict(self) -> dict:
        return {"code": self.code, "message": self.message}


class NotFound(ServiceError):
    status_code = 404
