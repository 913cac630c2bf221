"""Property-based fuzzing (hypothesis): no input to the CLI or a sweep spec lets a traceback escape."""

import contextlib
import io

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vaelab.cli.main import main
from vaelab.errors import VaelabError
from vaelab.studies.sweep import parse_spec

OPTIONS = ["--model", "--arch", "--latent-dim", "--beta", "--epochs", "--batch-size", "--lr", "--seed",
           "--device", "--out", "--resume", "--binarize", "--data-dir", "--jobs", "--set", "--list", "--seed",
           "--together"]
COMMANDS = ["train", "sample", "reconstruct", "latent", "interpolate", "figures", "sweep", "data", "demo", "bogus",
            "train-together"]
VALUES = st.one_of(st.sampled_from(["conv", "dense", "32-64", "256-512", "0", "-1", "1e309", "nan", "inf", "x",
                                    "cpu", "cuda", "", "..", "/", "beta", "info", "a=b", "train.beta=2"]),
                   st.text(max_size=12), st.integers(-5, 10**6).map(str), st.floats(allow_nan=True).map(str))


def call(argv):
    """Run the CLI in-process; return its exit code and what it wrote to stderr."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as e:  # argparse's usage errors and --help
            code = e.code
    return code, err.getvalue()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cmd=st.sampled_from(COMMANDS), rest=st.lists(st.one_of(st.sampled_from(OPTIONS), VALUES), max_size=8))
def test_cli_never_shows_a_traceback(tmp_path, monkeypatch, cmd, rest):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VAELAB_DATA", str(tmp_path / "no-data-here"))  # nothing ever trains
    argv = [cmd, *rest]
    if cmd == "demo" and "--help" not in rest:
        argv += ["--data-dir", str(tmp_path / "no-data-here")]
    code, err = call(argv)
    assert "Traceback" not in err
    assert "internal error" not in err, (argv, err)
    assert code in (0, 1, 2, 3, 4), (argv, code, err)


TOML_BITS = st.sampled_from(['name = "x"\n', "[base]\n", "[grid]\n", "[evaluate]\n", "[bogus]\n",
                             '"model.latent_dim" = [2, 5]\n', '"model.arch" = ["32-64", "zz"]\n',
                             "model.family = 'dense'\n", "train.beta = -1\n", '"train.seed" = []\n',
                             "train.epochs = 'x'\n", "x = [\n", "= 3\n", '"a.b.c" = [1]\n', "name = 3\n"])


@settings(max_examples=300, deadline=None)
@given(parts=st.lists(st.one_of(TOML_BITS, st.text(max_size=20)), max_size=8))
def test_sweep_specs_fail_cleanly(parts):
    try:
        parse_spec("".join(parts))
    except VaelabError:
        pass


def test_fuzzer_can_see_a_failure():
    """The property above would catch a bug: an unexpected exception is reported as internal error."""
    import vaelab.cli.vae as V

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(V, "cmd_train", lambda args: 1 / 0)
        code, err = call(["train", "--out", "x", "--epochs", "1"])
    assert code == 70 and "internal error" in err and "Traceback" not in err
