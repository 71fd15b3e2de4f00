class UserError(Exception):
    """A problem with the user's input, reported as one line (no traceback)."""


class EmulationWarning(UserWarning):
    """amx nodes run on the emulation although the custom ops were not ruled out (the CLI
    prints it as one ``warning:`` line)."""


# the optional dependencies (pyproject.toml's extras) by the top-level module a command imports
EXTRAS = {
    "torch": "torch",
    "transformers": "torch",
    "gguf": "torch",
    "accelerate": "torch",
    "gensim": "eval",
    "matplotlib": "eval",
}


def missing_extra(error: ModuleNotFoundError, command: str | None) -> UserError | None:
    """The one-line error naming the extra to install when ``error`` is an optional
    dependency's absence (None when it is anything else: a bug)."""
    module = (error.name or "").partition(".")[0]
    extra = EXTRAS.get(module)
    if extra is None:
        return None
    what = f"`{command}`" if command else "this command"
    return UserError(
        f"{what} needs {module}, which is not installed: pip install 'amx-export[{extra}]'"
    )
