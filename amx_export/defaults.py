"""Names and limits shared by the commands and the modules behind them.

Kept free of heavy imports, so that a command's parser can show its defaults without loading
torch (the CLI's start-up time is the import time of what its parsers touch).
"""

import math

FULL_PRECISION = "fp"  # the name eval and reference use for the unquantized model
# where commands write when no output is named: never the current folder (a repository
# checkout would collect hundreds of MB of untracked files there)
OUTPUT_DIR = "build"

# eval: the ONNX perplexity must be within 0.5% of the reference's over GAP_TOKENS scored
# tokens. W4A4 rounding flips between the two runtimes (README, "why the check is
# statistical") move each window's perplexity by a random amount that averages out as
# 1/sqrt(windows); SmolLM2 measured -0.30%..+0.48% over 102,350 tokens, +1.15% over 4,088.
MAX_ONNX_GAP = 0.005
GAP_TOKENS = 102_400


def max_onnx_gap(scored_tokens: int) -> float:
    """eval's default limit for ``scored_tokens`` tokens: MAX_ONNX_GAP at GAP_TOKENS or more,
    growing as 1/sqrt(tokens) below (2.5% at 4k tokens, 3.5% at 2k)."""
    return MAX_ONNX_GAP * math.sqrt(max(1.0, GAP_TOKENS / max(scored_tokens, 1)))
