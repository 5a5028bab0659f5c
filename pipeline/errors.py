"""The errors the pipeline raises, one class per thing that can go wrong.

    PipelineError                  base: a message for a person, and an exit code
    ├── UsageError                 bad command-line or function arguments (exit 2)
    ├── ConfigError                services.toml is wrong, or does not match the source (exit 2)
    ├── GitError                   the git context (branch, sha) cannot be read
    ├── MissingSecretError         a secret the run needs was not given (exit 2)
    ├── BuildError                 one service failed to build, test or smoke-check
    ├── PublishError               one service's image could not be pushed
    ├── RegistryError              the OCI registry answered with an error
    │   ├── RegistryAuthError      credentials refused (401)
    │   ├── RegistryPermissionError  credentials lack a scope (403, insufficient_scope)
    │   └── ManifestNotFoundError  no such repository, tag or digest (404)
    ├── GitHubAPIError             GitHub's REST API answered with an error
    ├── DokployError               Dokploy's API answered with an error
    │   ├── DokployAuthError       the API key is missing, wrong, expired or rate-limited
    │   ├── DokployPermissionError the key lacks permission on that service
    │   ├── DokployNotFoundError   the compose, application or deployment does not exist
    │   ├── DokployValidationError the input failed Dokploy's validation
    │   └── DokployUnavailableError  5xx, timeouts or dropped connections, after retries
    ├── DeploymentError            Dokploy's own deployment record says error or cancelled
    ├── DeploymentTimeoutError     the deployment did not finish before the deadline
    ├── HealthCheckError           a health check did not pass before its deadline
    └── RetentionError             a prune would delete something in use, or half-failed

Every message names the file, key, service, URL or id involved and says how to fix
it. No message ever contains a secret value: secrets live in ``SecretValue``
(``pipeline.secret``) whose ``repr`` and ``str`` are redacted.
"""

from __future__ import annotations

EXIT_FAILURE = 1
EXIT_USAGE = 2


class PipelineError(Exception):
    """Base class: something a person should read, without a traceback."""

    exit_code = EXIT_FAILURE

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(PipelineError):
    """Command-line or function arguments are wrong."""

    exit_code = EXIT_USAGE


class ConfigError(PipelineError):
    """services.toml is invalid, or does not match the source tree."""

    exit_code = EXIT_USAGE

    def __init__(self, file: str, key: str, problem: str) -> None:
        location = f"{file}: {key}" if key else file
        super().__init__(f"{location}: {problem}")
        self.file = file
        self.key = key
        self.problem = problem


class GitError(PipelineError):
    """The branch or commit of the source cannot be determined."""

    exit_code = EXIT_USAGE


class MissingSecretError(PipelineError):
    """A secret the run needs was not passed."""

    exit_code = EXIT_USAGE


class BuildError(PipelineError):
    """One service failed to build, test or smoke-check."""

    def __init__(self, service: str, step: str, detail: str, output_tail: str = "") -> None:
        message = f"{service}: {step} failed: {detail}"
        if output_tail:
            message += "\n" + output_tail
        super().__init__(message)
        self.service = service
        self.step = step
        self.detail = detail
        self.output_tail = output_tail


class PublishError(PipelineError):
    """One service's image could not be pushed or tagged."""

    def __init__(self, service: str, reference: str, detail: str) -> None:
        super().__init__(f"{service}: publishing {reference} failed: {detail}")
        self.service = service
        self.reference = reference
        self.detail = detail


class RegistryError(PipelineError):
    """The OCI registry answered with an error."""

    def __init__(self, message: str, *, url: str = "", status: int | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.status = status


class RegistryAuthError(RegistryError):
    """The registry refused the credentials."""


class RegistryPermissionError(RegistryError):
    """The credentials are valid but lack the scope for this operation."""


class ManifestNotFoundError(RegistryError):
    """The repository, tag or digest does not exist."""


class GitHubAPIError(PipelineError):
    """GitHub's REST API answered with an error."""

    def __init__(self, message: str, *, url: str = "", status: int | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.status = status


class DokployError(PipelineError):
    """Dokploy's API answered with an error."""

    def __init__(self, message: str, *, endpoint: str = "", status: int | None = None) -> None:
        super().__init__(message)
        self.endpoint = endpoint
        self.status = status


class DokployAuthError(DokployError):
    """The API key is missing, wrong, expired or rate-limited."""


class DokployPermissionError(DokployError):
    """The API key is valid but may not act on this service."""


class DokployNotFoundError(DokployError):
    """The compose, application or deployment id does not exist."""


class DokployValidationError(DokployError):
    """Dokploy rejected the input."""


class DokployUnavailableError(DokployError):
    """Dokploy kept failing (5xx, timeouts, dropped connections) after the retries."""


class DeploymentError(PipelineError):
    """Dokploy's deployment record ended in ``error`` or ``cancelled``."""

    def __init__(self, target: str, deployment_id: str, status: str, log_tail: str = "") -> None:
        message = f"{target}: deployment {deployment_id} ended with status '{status}'"
        if log_tail:
            message += "; last log lines:\n" + log_tail
        super().__init__(message)
        self.target = target
        self.deployment_id = deployment_id
        self.status = status
        self.log_tail = log_tail


class DeploymentTimeoutError(PipelineError):
    """The deployment did not reach a final state in time."""


class HealthCheckError(PipelineError):
    """A health check did not pass before its deadline."""

    def __init__(self, url: str, waited: float, last: str) -> None:
        super().__init__(f"health check {url} did not pass after {waited:.1f}s (last result: {last})")
        self.url = url
        self.waited = waited
        self.last = last


class RetentionError(PipelineError):
    """A retention run would delete something in use, or could not finish."""
