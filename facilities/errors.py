"""The one exception tree of the service."""


class FacilitiesError(Exception):
    """Base of every error the service raises on purpose."""


class OperatorError(FacilitiesError):
    """Something the operator can fix (bad file, unreachable broker); printed as one line."""


class SiteError(OperatorError):
    """The site file is invalid; `problems` lists every error with its line."""

    def __init__(self, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        super().__init__(f"{path}: " + "; ".join(problems))


class BrokerError(OperatorError):
    """The broker cannot be reached or used."""


class BrokerAuthError(BrokerError):
    """The broker refused our credentials: retrying will not help."""


class StoreError(OperatorError):
    """The database cannot be opened or migrated."""
