"""The steps of a staged shell job: a module of the handler folder, imported by its absolute name."""

import subprocess


def run_steps(steps: list[str]) -> list[str]:
    out = []
    for step in steps:
        done = subprocess.run(["bash", "-c", step], capture_output=True, text=True, check=True)
        out.extend(line for line in done.stdout.splitlines() if line)
    return out
