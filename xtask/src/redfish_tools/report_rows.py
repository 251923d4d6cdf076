"""Print the rows of a DMTF validator's Excel report as tab-separated lines.

Run by xtask (xtask/src/redfish_tools/validate.rs) with the venv's Python, which has openpyxl
(a dependency of both validators). The report is the most complete record of a run: the
validators' debug logs leave out the interop validator's service-wide checks.

    R <TAB> uri <TAB> resource type <TAB> property <TAB> value <TAB> result <TAB> message
        one per row of the "Results" sheet (both validators)
    T <TAB> resource type <TAB> result <TAB> message
        one per row of the "Resources" sheet (interop validator only)

Tabs and line breaks inside a cell become " | ". Exit status 2 when the file cannot be read.
"""

import sys

import openpyxl

RESULTS = ["URI", "Resource Type", "Property", "Value", "Result", "Message"]
RESOURCES = ["Resource Type", "Result", "Message"]


def cell(value):
    text = "" if value is None else str(value)
    return " | ".join(part.strip() for part in text.replace("\t", "\n").splitlines() if part.strip())


def rows(sheet, wanted):
    """The wanted columns of every row after the header, located by header name."""
    it = sheet.iter_rows(values_only=True)
    header = [cell(h) for h in next(it, [])]
    missing = [w for w in wanted if w not in header]
    if missing:
        raise ValueError(f"sheet {sheet.title!r} has no column {missing[0]!r} (header {header})")
    index = [header.index(w) for w in wanted]
    for row in it:
        if row and any(v is not None for v in row):
            yield [cell(row[i]) if i < len(row) else "" for i in index]


def main(path):
    try:
        book = openpyxl.load_workbook(path, read_only=True)
        out = []
        if "Results" in book.sheetnames:
            out += ["R\t" + "\t".join(r) for r in rows(book["Results"], RESULTS)]
        if "Resources" in book.sheetnames:
            out += ["T\t" + "\t".join(r) for r in rows(book["Resources"], RESOURCES)]
    except Exception as e:  # noqa: BLE001 - any failure to read is reported the same way
        print(f"report_rows: {path}: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: report_rows.py REPORT.xlsx", file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1]))
