"""The ``lmcaps`` command: a cliff App over the ``lmcaps.cli`` commands.

Errors a user can fix are printed as one line, ``lmcaps: error: ...``, with
no traceback (``--debug`` adds it).  Exit codes: 0 success; 1 the operation
failed (a pre-check refused, the event store is unusable, a driver failed);
2 the input is wrong (arguments, request, configuration file or value,
unknown driver, check or conformance backend).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import traceback
from collections.abc import Sequence
from typing import Any

from cliff import app
from cliff import command
from cliff import commandmanager
from oslo_config import cfg

import lmcaps
from lmcaps import conf as lmcaps_conf
from lmcaps import exception
from lmcaps import masking
from lmcaps import validation

#: Errors that mean "your input is wrong": exit code 2.
USAGE_ERRORS: tuple[type[BaseException], ...] = (
    cfg.Error, exception.InvalidRequest, exception.DriverNotFound,
    exception.CheckNotFound, exception.BackendNotFound,
    exception.InvalidInput, exception.InvalidConfig)

#: Longest error line printed, in characters (inputs are echoed shorter).
ERROR_LINE_MAX = 1000

# oslo.config's message names the source as LocationInfo(...); say the file.
_VALUE_ERROR_RE = re.compile(
    r"Value for option \S+ from LocationInfo\(.*?detail='(?P<file>.*?)'\)"
    r" is not valid: (?P<why>.*)", re.S)

# cliff reports command errors on this logger; we print them ourselves.
_CLIFF_ERRORS = logging.getLogger('lmcaps-cli-errors')
_CLIFF_ERRORS.addHandler(logging.NullHandler())
_CLIFF_ERRORS.propagate = False


def one_line(exc: BaseException) -> str:
    """The error as one line; unexpected errors name their type.

    Secrets are scrubbed, control characters escaped and the line cut at
    ERROR_LINE_MAX characters.
    """
    if isinstance(exc, exception.LmcapsException):
        text = exc.message
    elif isinstance(exc, KeyboardInterrupt):
        text = 'interrupted by SIGINT'
    elif isinstance(exc, cfg.Error):
        text = str(exc)
    else:
        text = (f'{type(exc).__name__}: {exc} (run with --debug for the '
                f'traceback)')
    text = validation.escape(' '.join(masking.scrub(text).split()))
    if len(text) > ERROR_LINE_MAX:
        text = text[:ERROR_LINE_MAX] + '...'
    return text


#: Exit code after a SIGINT that no command handled (128 + SIGINT, as a
#: shell reports it).
INTERRUPTED = 130


def exit_code(exc: BaseException) -> int:
    if isinstance(exc, KeyboardInterrupt):
        return INTERRUPTED
    return 2 if isinstance(exc, USAGE_ERRORS) else 1


def load_conf(config_files: Sequence[str]) -> cfg.ConfigOpts:
    """A private ConfigOpts with lmcaps's options registered and checked.

    Each file is first checked to be a small regular text file; then every
    option of ``[lmcaps]`` and of each installed driver is read and the
    whole is validated (:func:`lmcaps.conf.validate`); the secrets of every
    secret option and URL are remembered for :func:`lmcaps.masking.scrub`.

    :param config_files: files to read; none means oslo.config's default
        search (``/etc/lmcaps/lmcaps.conf`` ...).
    :raises: oslo_config.cfg.Error for a missing or unparsable file or a
        bad value; InvalidConfig for a file that is not text or a
        configuration that is inconsistent as a whole.
    """
    files = list(config_files) or cfg.find_config_files(project='lmcaps')
    for path in files:
        lmcaps_conf.check_config_file(path)
    conf = cfg.ConfigOpts()
    lmcaps_conf.register_opts(conf)
    conf(args=[], project='lmcaps', version=lmcaps.__version__,
         default_config_files=files)
    groups = lmcaps_conf.known_groups(conf)
    for group, opts in groups.items():
        check_values(conf, group, opts)
    remember_secrets(conf, groups)
    lmcaps_conf.validate(conf, files, groups)
    return conf


def remember_secrets(conf: cfg.ConfigOpts,
                     groups: dict[str, list[cfg.Opt]]) -> None:
    """Remember secret option values and the secrets in URL-like values."""
    for group, opts in groups.items():
        for opt in opts:
            value = conf[group][opt.dest]
            if not isinstance(value, str) or not value:
                continue
            if '://' in value or opt.secret:
                masking.remember(value)
            if opt.secret and '://' not in value:
                masking.remember(value, url=False)


def check_values(conf: cfg.ConfigOpts, group: str,
                 opts: Sequence[cfg.Opt]) -> None:
    """Read every option of ``group`` so that a bad value fails now.

    :raises: oslo_config.cfg.ConfigFileValueError naming the group, the
        option, the file and what is allowed.
    """
    for opt in opts:
        try:
            conf[group][opt.dest]
        except cfg.ConfigFileValueError as exc:
            match = _VALUE_ERROR_RE.match(str(exc))
            if not match:
                raise
            allowed = _allowed(opt)
            raise cfg.ConfigFileValueError(
                f'bad value for [{group}] {opt.dest} in '
                f'{validation.escape(match["file"][:200])}: '
                f'{validation.escape(match["why"][:300])}'
                + (f'; allowed: {allowed}' if allowed else '')) from exc


def _allowed(opt: cfg.Opt) -> str:
    """What ``opt`` takes, in words ('' where its type says nothing)."""
    from oslo_config import types
    kind = opt.type
    if isinstance(kind, types.Boolean):
        return 'true or false (also yes/no, on/off, 1/0)'
    if isinstance(kind, (types.Integer, types.Float)):
        what = ('an integer' if isinstance(kind, types.Integer)
                else 'a finite number')
        low, high = kind.min, kind.max
        if low is not None and high is not None:
            return f'{what} from {low:g} to {high:g}'
        if low is not None:
            return f'{what} >= {low:g}'
        if high is not None:
            return f'{what} <= {high:g}'
        return what
    choices = getattr(kind, 'choices', None)
    if choices:
        return ', '.join(str(c) for c in choices)
    return ''


def one_line_usage(parser: argparse.ArgumentParser, hint: str | None = None
                   ) -> argparse.ArgumentParser:
    """Make ``parser``'s usage errors one line: ``lmcaps: error: ...``.

    argparse prints the whole usage before its message (a missing
    ``--dest``, ``-f xml``, ``--bandwidth 0``); lmcaps's user errors are one
    line naming the argument and what is allowed, exit code 2, with the
    usage left to ``--help``.

    :param hint: where the usage is; default ``lmcaps help COMMAND``, for
        a command's parser (``prog`` ``lmcaps COMMAND``).
    :returns: ``parser``.
    """
    see = hint or f'lmcaps help {parser.prog.removeprefix("lmcaps ")}'

    def error(message: str) -> Any:
        text = validation.escape(' '.join(message.split()))
        if len(text) > ERROR_LINE_MAX:
            text = text[:ERROR_LINE_MAX] + '...'
        parser.exit(2, f'lmcaps: error: {text} (see: {see})\n')
    parser.error = error  # type: ignore[method-assign]
    return parser


def conf_of(app: Any) -> cfg.ConfigOpts:
    """The private conf of the running ``lmcaps`` application."""
    conf: cfg.ConfigOpts = app.conf
    return conf


def load_driver(conf: cfg.ConfigOpts, name: str | None) -> Any:
    """Driver ``name`` (default ``[lmcaps] driver``) with its options checked.

    :raises: DriverNotFound, DriverLoadFailed, or ConfigFileValueError for a
        bad value in the driver's option group.
    """
    from lmcaps import drivers
    driver = drivers.load(name or conf[lmcaps_conf.GROUP].driver, conf)
    check_values(conf, driver.group, driver.list_opts())
    return driver


class LmcapsApp(app.App):
    """Live-migration capabilities, pre-checks and events."""

    NAME = 'lmcaps'
    LOG = _CLIFF_ERRORS

    def __init__(self) -> None:
        super().__init__(
            description='Live-migration driver capabilities, pre-checks and '
                        'instance action events (lmcaps).',
            version=lmcaps.__version__,
            command_manager=commandmanager.CommandManager('lmcaps.cli'),
            deferred_help=True)
        self.conf: cfg.ConfigOpts | None = None
        self.error: BaseException | None = None
        self._handlers: list[logging.Handler] = []
        self._saved_level = logging.NOTSET

    def build_option_parser(self, description: str | None,
                            version: str | None,
                            argparse_kwargs: dict[str, Any] | None = None
                            ) -> argparse.ArgumentParser:
        parser = one_line_usage(super().build_option_parser(
            description, version, argparse_kwargs), hint='lmcaps --help')
        parser.add_argument(
            '--config-file', action='append', dest='config_files',
            default=[], metavar='PATH',
            help='Configuration file to read (repeatable); default: '
                 "oslo.config's search for lmcaps.conf "
                 '(~/.lmcaps/, ~/, /etc/lmcaps/, /etc/).')
        return parser

    def configure_logging(self) -> None:
        """Log ``lmcaps`` messages to stderr; leave the root logger alone."""
        level = {0: logging.ERROR, 1: logging.WARNING,
                 2: logging.INFO}.get(self.options.verbose_level,
                                      logging.DEBUG)
        handler: logging.Handler = logging.StreamHandler(self.stderr)
        handler.setLevel(level)
        handler.setFormatter(logging.Formatter('lmcaps: %(message)s'))
        self._handlers.append(handler)
        if self.options.log_file:
            file_handler = logging.FileHandler(self.options.log_file)
            file_handler.setFormatter(
                logging.Formatter(self.LOG_FILE_MESSAGE_FORMAT))
            self._handlers.append(file_handler)
        for h in self._handlers:
            h.addFilter(masking.ScrubFilter())
        logger = logging.getLogger('lmcaps')
        self._saved_level = logger.level
        logger.setLevel(logging.DEBUG if self.options.log_file else level)
        for h in self._handlers:
            logger.addHandler(h)

    def initialize_app(self, argv: list[str]) -> None:
        try:
            self.conf = load_conf(self.options.config_files)
        except Exception as exc:
            self.error = exc
            raise

    def run_subcommand(self, argv: list[str]) -> int:
        """Run the command; an unknown one is one line naming them all.

        cliff would print several lines ("Did you mean one of these?") to
        stdout, or log the error.
        """
        try:
            self.command_manager.find_command(argv)
        except ValueError:
            names = sorted({name for name, _ in self.command_manager} |
                           {'help'})
            fuzzy = [m for m in self.get_fuzzy_matches(argv[0])
                     if m in names]
            hint = f" (did you mean {' or '.join(fuzzy[:3])}?)" if fuzzy \
                else ''
            self.error = exception.InvalidInput(
                what='command', value=validation.echo(argv[0]),
                allowed=f"{', '.join(names)}{hint}")
            return 2
        return super().run_subcommand(argv)

    def interact(self) -> None:
        """No command given: print the help (no interactive shell)."""
        self.stderr.write('lmcaps: error: no command given\n')
        self.parser.print_usage(self.stderr)
        self.stderr.write("Run 'lmcaps --help' for the commands.\n")

    def clean_up(self, cmd: command.Command, result: int,
                 err: BaseException | None) -> None:
        if err is not None and not isinstance(err, BrokenPipeError):
            self.error = err

    def close(self) -> None:
        """Remove the log handlers this run added."""
        if not self._handlers:
            return
        logger = logging.getLogger('lmcaps')
        for h in self._handlers:
            logger.removeHandler(h)
            h.close()
        self._handlers.clear()
        logger.setLevel(self._saved_level)


class ScrubbingStream:
    """A text stream that scrubs remembered secrets from what is written."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        return self._stream.write(masking.scrub(text))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _remember_argument_secrets(argv: Sequence[str]) -> None:
    """Secrets in URL arguments (``--dest qemu+ssh://u:pw@h/system``)."""
    for arg in argv:
        value = arg.partition('=')[2] if arg.startswith('--') else arg
        if '://' in value:
            masking.remember(value)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code.

    Everything written to stdout and stderr (tables, errors, argparse
    messages, ``--debug`` tracebacks) and to the log file goes through
    :func:`lmcaps.masking.scrub`.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    _remember_argument_secrets(argv)
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = ScrubbingStream(sys.stdout), \
        ScrubbingStream(sys.stderr)
    try:
        return _main(argv)
    finally:
        sys.stdout, sys.stderr = saved


def _main(argv: list[str]) -> int:
    application = LmcapsApp()
    try:
        code = application.run(argv)
        if application.interactive_mode:
            code = 2
    except SystemExit as exc:
        if _from_argparse(exc):   # usage or --help, already printed
            code = exc.code if isinstance(exc.code, int) else (
                0 if exc.code is None else 2)
        else:   # a plugin (driver, backend) exited: never a success
            application.error = exception.LmcapsException(
                f'the command was ended by SystemExit({exc.code!r}) from '
                'a plugin; no result')
            code = 1
    except Exception as exc:  # only with --debug does cliff re-raise
        application.error = exc
        code = 1
    finally:
        application.close()
    if code == app._SIGINT_EXIT and application.error is None:
        # cliff returns it silently for a Ctrl-C while it parses options
        # or loads the command: say it, as after any interrupted command
        application.error = KeyboardInterrupt()
    if code == app._SIGPIPE_EXIT:
        _silence_stdout()
    err = application.error
    if err is not None:
        if getattr(application, 'options', None) is not None and \
                application.options.debug:
            application.stderr.write(masking.scrub(
                ''.join(traceback.format_exception(err))))
        application.stderr.write(f'lmcaps: error: {one_line(err)}\n')
        application.stderr.flush()
        code = exit_code(err)
    return code


def _from_argparse(exc: SystemExit) -> bool:
    """Whether argparse or cliff's help raised it (usage or help printed)."""
    from cliff import help as cliff_help
    if isinstance(exc, cliff_help.HelpExit):
        return True
    tb = exc.__traceback__
    last = None
    while tb is not None:
        last = tb.tb_frame.f_code.co_filename
        tb = tb.tb_next
    return last is not None and os.path.basename(last) == 'argparse.py'


def _silence_stdout() -> None:
    """After a closed pipe (``lmcaps report | head``), drop further output."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass  # not a real file (tests): nothing to flush at exit


if __name__ == '__main__':
    sys.exit(main())
