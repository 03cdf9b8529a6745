#!/usr/bin/env python3
"""Regenerates airports.tsv and LICENSE from the airportsdata package on PyPI.

Usage: update.py [VERSION | path/to/airportsdata-*.whl]

Without an argument it downloads the newest wheel with pip (no install, no
dependencies); with a version it downloads that one; with a wheel it reads it.
See README.md for the rules that pick and shape the rows.
"""

import csv
import io
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
COLUMNS = ["code", "name", "city", "country", "latitude", "longitude"]


def wheel(arg, tmp):
    if arg and arg.endswith(".whl"):
        return Path(arg)
    spec = f"airportsdata=={arg}" if arg else "airportsdata"
    subprocess.run(
        [sys.executable, "-m", "pip", "download", spec, "--no-deps",
         "--only-binary=:all:", "--quiet", "--dest", tmp],
        check=True,
    )
    return next(Path(tmp).glob("airportsdata-*.whl"))


def member(zf, suffix):
    name = next(n for n in zf.namelist() if n.endswith(suffix))
    return zf.read(name).decode("utf-8")


def rows(zf):
    # The IATA's multi-airport cities name the city an airport is sold as
    # (EZE is Buenos Aires, not Ezeiza), so they come first.
    metro = {r["Airport Code"]: r["City Name"]
             for r in csv.DictReader(io.StringIO(member(zf, "airportsdata/iata_macs.csv")))}
    airports = {}
    for r in csv.DictReader(io.StringIO(member(zf, "airportsdata/airports.csv"))):
        code = r["iata"]
        if not (len(code) == 3 and code.isascii() and code.isalpha() and code.isupper()):
            continue
        for coordinate in (r["lat"], r["lon"]):
            float(coordinate)  # fails loudly rather than writing a row Rust would skip
        # A later row replaces an earlier one, as airportsdata.load("IATA") does.
        airports[code] = [code, r["name"], metro.get(code) or r["city"] or r["name"],
                          r["country"], r["lat"], r["lon"]]
    return [airports[code] for code in sorted(airports)]


def main():
    arg = sys.argv[1] if len(sys.argv) > 1 else None
    with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(wheel(arg, tmp)) as zf:
        version = next(line.split(":", 1)[1].strip()
                       for line in member(zf, ".dist-info/METADATA").splitlines()
                       if line.startswith("Version:"))
        licence = member(zf, ".dist-info/licenses/LICENSE")
        table = rows(zf)
    for row in table:
        if any("\t" in f or "\n" in f or not f for f in row):
            sys.exit(f"cannot write {row} as a TSV row")
    with open(HERE / "airports.tsv", "w", encoding="utf-8", newline="\n") as out:
        out.write(f"# airportsdata {version} (https://pypi.org/project/airportsdata/), "
                  "MIT licence (LICENSE); made by update.py\n")
        for row in [COLUMNS] + table:
            out.write("\t".join(row) + "\n")
    (HERE / "LICENSE").write_text(licence, encoding="utf-8")
    print(f"airportsdata {version}: {len(table)} airports")


if __name__ == "__main__":
    main()
