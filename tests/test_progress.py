"""Long steps are never silent when the output is a log, not a terminal."""

import time

from amx_export.progress import Steps, counting_progress


def test_steps_print_each_step_and_a_heartbeat_while_one_runs(capsys):
    with Steps(every=0.05) as step:
        step("tracing")
        time.sleep(0.18)
        step("writing")
    captured = capsys.readouterr()
    assert [line.split("s  ", 1)[1] for line in captured.out.splitlines()] == [
        "tracing", "writing",
    ]  # fmt: skip
    beats = [line for line in captured.err.splitlines() if line.startswith("  ... tracing: ")]
    assert len(beats) >= 2 and "writing" not in captured.err  # the last step ended at once


def test_counting_progress_ends_with_count_and_time(capsys):
    with counting_progress("perplexity", 3, "window") as advance:
        for _ in range(3):
            advance("fp")
    assert capsys.readouterr().err.strip() == "perplexity: 3/3 windows fp (0 s)"
