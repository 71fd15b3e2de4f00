"""One line per kernel launch from Nsight Compute's CSV (`ncu --csv --page details`): name,
duration, DRAM and SM throughput (% of peak), achieved occupancy. Used by gpu_check.sh.

    python scripts/ncu_summary.py profile.txt
"""

import csv
import sys

WANTED = {
    "Duration": "time",
    "DRAM Throughput": "dram %",
    "Compute (SM) Throughput": "sm %",
    "Achieved Occupancy": "occupancy %",
    "Registers Per Thread": "regs",
}


def main(path: str) -> int:
    with open(path, newline="") as f:
        lines = [line for line in f if line.startswith('"')]  # the CSV, not the program's output
    launches: dict[str, dict[str, str]] = {}
    for row in csv.DictReader(lines):
        key = row["ID"]
        entry = launches.setdefault(key, {"kernel": row["Kernel Name"].split("(")[0]})
        if row["Metric Name"] in WANTED:
            unit = row["Metric Unit"]
            entry[WANTED[row["Metric Name"]]] = row["Metric Value"] + (
                f" {unit}" if unit in ("us", "ns", "ms") else ""
            )
    for entry in launches.values():
        print("  ".join(f"{k}={v}" for k, v in entry.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
