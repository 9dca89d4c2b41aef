"""A CSV table as training data: feature columns and one label column.

Tabular data sets mostly come as CSV; ``compress --data table.csv`` takes one as the training
set (the ``x_train, y_train`` of an ``.npz``).  The first row is a header when it names the
columns (a cell that is not a number above one that is, or no number at all).  The labels are
the column ``--label-column`` names (a header name or a 0-based index), else the one headed
``label``, ``target``, ``class``, ``y`` (or ``labels``, ``category``), else the only column
that holds names rather than numbers (iris's ``species``), else the last.  Class
names (``setosa``, ``spam``) are numbered in sorted order and the numbering is told; every
other column is a feature and must hold numbers.  A regression's label columns hold its
targets.  Nothing is guessed silently: a missing or non-numeric feature is refused naming its
line and column, and the columns left out as not data (an empty trailing one, pandas' index)
are told.  ``sim`` and ``report`` read their ``--inputs`` tables the same way
(:func:`inputs_of_table`).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sparseforge.compiler.errors import InputError, no_such_file

__all__ = ["LABEL_NAMES", "Table", "inputs_of_table", "is_table", "load_table"]

LABEL_NAMES = ("label", "labels", "target", "class", "y", "category")
_SUFFIXES = (".csv", ".tsv")


@dataclass(frozen=True)
class Table:
    x: np.ndarray                   # samples x features, float32
    y: np.ndarray | None            # class numbers, int64, or a regression's float32 targets
                                    # (None: a table of features only)
    label_column: str | None        # as the note names it: 'species' or 'column 4'
    feature_columns: int
    class_names: tuple[str, ...] | None   # class i's name, when the labels were names
    dropped: tuple[str, ...] = ()          # columns left out, and why

    def describe(self, path) -> str:
        """One line for the person running the command: what was read and how."""
        classes = ("; classes " + ", ".join(f"{i} = {name}"
                                            for i, name in enumerate(self.class_names))
                   if self.class_names else "")
        labels = (f", labels from {self.label_column}{classes}" if self.y is not None
                  else ", no labels")
        dropped = "".join(f"; {what}" for what in self.dropped)
        return (f"{path}: {len(self.x)} samples, {self.feature_columns} feature "
                f"columns{labels}{dropped}")


def is_table(path: Path) -> bool:
    """Whether ``path`` is to be read as a CSV table: by its suffix."""
    return path.suffix.lower() in _SUFFIXES


def load_table(path, label_column: str | None = None, features: int | None = None,
               what: str = "data", *, targets: bool = False, outputs: int = 1,
               class_names: tuple[str, ...] | None = None) -> Table:
    """The table at ``path``.  ``features``: the inputs the model takes, when known; a table
    that many columns wide (and no ``label_column``) is features only, without labels.
    ``targets``: the label column holds a regression's target values (float32), not
    classes; several columns (``label_column`` "t1,t2"; unnamed, the last ``outputs``) hold
    a regression's several outputs' targets (y samples x columns).  ``class_names``: class
    names numbered as another table's were (a test set's, as its training set's)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(no_such_file(path, what))
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise InputError(f"{path}: not a UTF-8 text table (byte {error.start} cannot be "
                         f"read): save it as CSV in UTF-8") from None
    delimiter = _delimiter(path, text)
    rows = [(number, [_cell(cell, delimiter) for cell in row])
            for number, row in enumerate(csv.reader(text.splitlines(), delimiter=delimiter), 1)
            if any(cell.strip() for cell in row)]
    if not rows:
        raise InputError(f"{path}: the table is empty")
    header = _header(rows)
    if header is not None:
        rows = rows[1:]
    if not rows:
        raise InputError(f"{path}: the table has a header and no samples")
    width = len(header if header is not None else rows[0][1])
    for number, row in rows:
        if len(row) != width:
            raise InputError(f"{path} line {number}: {len(row)} columns where the "
                             f"{'header' if header is not None else 'first line'} has {width}")
    header, rows, dropped = _without_empty_and_index(header, rows)
    width = len(header if header is not None else rows[0][1])
    def named(index: int) -> str:
        return repr(header[index]) if header is not None and header[index] else f"column {index}"

    if width == features and label_column is None:
        labels, name = [], None
    elif width < 2:
        raise InputError(f"{path}: one column; a table needs feature columns and a label "
                         f"column")
    elif targets and label_column is not None and "," in label_column:
        labels = [_label_index(path, header, width, column.strip(), rows)[0]
                  for column in label_column.split(",")]
        name = ", ".join(map(named, labels))
    elif targets and outputs > 1 and label_column is None:
        if features is not None and width != features + outputs:
            raise InputError(f"{path}: {width} columns; the model's inputs and their targets "
                             f"are {features} + {outputs} (or name the target columns with "
                             f"--label-column t1,t2)")
        labels = list(range(width - outputs, width))
        name = f"{', '.join(map(named, labels))} (the last {outputs})"
    else:
        label, why = _label_index(path, header, width, label_column, rows)
        labels, name = [label], named(label) + why
    if len(set(labels)) != len(labels):
        raise InputError(f"{path}: --label-column {label_column!r} names a column twice")
    features = [index for index in range(width) if index not in labels]
    x = np.empty((len(rows), len(features)), dtype=np.float32)
    for i, (number, row) in enumerate(rows):
        for j, index in enumerate(features):
            try:
                x[i, j] = float(row[index])
            except ValueError:
                raise InputError(f"{path} line {number}, {named(index)}: {row[index]!r} is not a "
                                 f"number; features must be numbers (fill or drop missing "
                                 f"values, encode categories as numbers)") from None
    if not labels:
        return Table(x, None, None, len(features), None, dropped)
    if targets:
        y = np.stack([_targets(path, [row[label] for _, row in rows], rows, named(label))
                      for label in labels], axis=1)
        return Table(x, y[:, 0] if len(labels) == 1 else y, name, len(features), None,
                     dropped)
    y, class_names = _labels(path, [row[labels[0]] for _, row in rows], name, class_names,
                             [number for number, _ in rows])
    return Table(x, y, name, len(features), class_names, dropped)


def inputs_of_table(path, label_column: str | None, labels_path, program):
    """A command's ``--inputs TABLE.csv``: the inputs of ``program`` and their labels (the
    table's, else ``--labels``' ``.npy``, else None); what was read is told on stderr.  The
    table holds the model's inputs, and its labels in one more column (a regression's
    targets: as many as it has outputs).  Labels that are class names are numbered as
    ``compress`` numbered the training table's: by the names the program keeps
    (``Program.class_names``); a program without them (compiled from a model trained on
    numbered labels, or from before they were kept) numbers them in sorted order, which is
    the same numbering only when the table names every class, so a table naming fewer is
    refused."""
    from .common import load_npy, stderr_console

    classes = program.network.layers[-1].out_features
    table = load_table(path, label_column, program.model_in_features, "inputs",
                       targets=program.task == "regression", outputs=classes,
                       class_names=program.class_names)
    if table.class_names is not None and len(table.class_names) != classes:
        raise InputError(f"{path}: the labels ({table.label_column}) name "
                         f"{len(table.class_names)} classes ({', '.join(table.class_names)}) "
                         f"and the model has {classes}: numbered in sorted order they would "
                         f"not be the training's numbers; give class numbers instead (or "
                         f"compress the model from its table again: the program then keeps "
                         f"the training's names)")
    stderr_console().print(table.describe(path), highlight=False)
    if table.class_names is not None and program.class_names is None:
        stderr_console().print(
            f"note: the program keeps no class names (its model was compressed from class "
            f"numbers): {path}'s names are numbered in sorted order, which is the model's "
            f"numbering only if its training numbered them so (give class numbers if not)",
            highlight=False)
    if table.y is not None and labels_path:
        raise InputError(f"--labels {labels_path}: the labels are {path}'s "
                         f"{table.label_column}; give one or the other")
    if table.y is not None:
        return table.x, table.y
    return table.x, load_npy(labels_path, "labels") if labels_path else None


def _delimiter(path: Path, text: str) -> str:
    if path.suffix.lower() == ".tsv":
        return "\t"
    first = next((line for line in text.splitlines() if line.strip()), "")
    # A semicolon-separated CSV (decimal commas' locales) has no comma in its header line.
    return ";" if ";" in first and "," not in first else ","


def _cell(cell: str, delimiter: str) -> str:
    # Semicolon-separated tables come from locales that write decimal commas (1,5).
    cell = cell.strip()
    return cell.replace(",", ".") if delimiter == ";" and _number(cell.replace(",", ".")) \
        else cell


def _without_empty_and_index(header, rows):
    """The table without the columns that are not data, and what was left out: a column
    empty in every line and unnamed (a delimiter at each line's end), and an unnamed first
    column counting the lines from 0 or 1 (the index ``pandas.DataFrame.to_csv`` writes
    unless ``index=False``)."""
    width = len(header if header is not None else rows[0][1])
    unnamed = [header is None or header[i] == "" or header[i].startswith("Unnamed: ")
               for i in range(width)]
    empty = [i for i in range(width) if unnamed[i] and all(row[i] == "" for _, row in rows)]
    dropped = [f"{len(empty)} empty column{'s' if len(empty) > 1 else ''} left out"] \
        if empty else []
    index = []
    if header is not None and unnamed[0] and 0 not in empty:
        try:
            counts = [float(row[0]) for _, row in rows]
        except ValueError:
            counts = []
        if counts and counts[0] in (0, 1) and counts == [counts[0] + i for i in
                                                         range(len(counts))]:
            index = [0]
            dropped.append(f"the unnamed first column counts the lines from "
                           f"{counts[0]:g} (pandas' index): left out")
    keep = [i for i in range(width) if i not in empty and i not in index]
    if len(keep) == width:
        return header, rows, ()
    return ([header[i] for i in keep] if header is not None else None,
            [(number, [row[i] for i in keep]) for number, row in rows], tuple(dropped))


def _number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _header(rows) -> list[str] | None:
    first = rows[0][1]
    if len(rows) == 1:
        return first if not any(map(_number, first)) else None
    second = rows[1][1]
    named = any(not _number(a) and _number(b) for a, b in zip(first, second))
    return first if named or not any(map(_number, first)) else None


def _named_label(header) -> bool:
    return header is not None and any(cell.lower() in LABEL_NAMES for cell in header)


def _label_index(path: Path, header, width: int, label_column: str | None,
                 rows) -> tuple[int, str]:
    """The label column's index, and why it was taken when nobody named it."""
    if label_column is None:
        if _named_label(header):
            lowered = [cell.lower() for cell in header]
            return next(lowered.index(name) for name in LABEL_NAMES if name in lowered), ""
        # Only names: a feature with a missing value ("NA") among its numbers is no label.
        named = [index for index in range(width)
                 if not any(_number(row[index]) for _, row in rows)]
        if len(named) == 1:
            return named[0], " (the only column of names)"
        return width - 1, " (the last)"
    if header is not None and label_column in header:
        return header.index(label_column), ""
    if label_column.lstrip("-").isdigit() and -width <= int(label_column) < width:
        return int(label_column) % width, ""
    names = f" (the header names {', '.join(map(repr, header))})" if header is not None else ""
    raise InputError(f"{path}: no label column {label_column!r}: give a header name or an "
                     f"index 0 .. {width - 1}{names}")


def _targets(path: Path, cells: list[str], rows, name: str) -> np.ndarray:
    for cell, (number, _) in zip(cells, rows):
        if not _number(cell):
            raise InputError(f"{path} line {number}, {name}: {cell!r} is not a number; a "
                             f"regression's targets are values")
    return np.array([float(cell) for cell in cells], dtype=np.float32)


def _labels(path: Path, cells: list[str], name: str,
            numbering: tuple[str, ...] | None = None,
            lines: list[int] | None = None) -> tuple[np.ndarray, tuple | None]:
    numbers = [_number(cell) for cell in cells]
    if all(numbers):
        values = np.array([float(cell) for cell in cells])
        if not np.all(values == np.round(values)):
            raise InputError(f"{path}: the labels ({name}) hold fractions such as "
                             f"{values[values != np.round(values)][0]:g}; labels are classes: "
                             f"for a regression's targets give --task regression, or choose "
                             f"the label column with --label-column")
        return values.astype(np.int64), None
    if any(cell == "" for cell in cells):
        raise InputError(f"{path}: sample {cells.index('') + 1} has no label ({name})")
    if any(numbers):
        # Numbered with the names in sorted order, '10' would come before '2': every class
        # would be renumbered by one stray cell.
        names = [i for i, number in enumerate(numbers) if not number]
        odd = names if len(names) <= len(cells) - len(names) else \
            [i for i, number in enumerate(numbers) if number]
        line = f" line {lines[odd[0]]}" if lines else f" sample {odd[0] + 1}"
        raise InputError(f"{path}{line}, {name}: {cells[odd[0]]!r} is "
                         f"{'not a number' if odd is names else 'a number'}, and "
                         f"{len(cells) - len(odd)} of the {len(cells)} labels are "
                         f"{'numbers' if odd is names else 'names'}: labels are class numbers "
                         f"or class names, not both (fix or drop the line"
                         f"{'s' if len(odd) > 1 else ''})")
    if numbering is not None:
        number = {class_name: index for index, class_name in enumerate(numbering)}
        unknown = sorted(set(cells) - set(number))
        if unknown:
            raise InputError(f"{path}: the labels ({name}) name {', '.join(map(repr, unknown))}, "
                             f"which the training data does not (its classes: "
                             f"{', '.join(numbering)})")
        return np.array([number[cell] for cell in cells], dtype=np.int64), numbering
    names, y = np.unique(np.array(cells), return_inverse=True)
    return y.astype(np.int64), tuple(str(n) for n in names)
