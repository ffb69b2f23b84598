"""The cell merge behind pairs under real-time collaboration (#28), without a server: base (what
the room last read or wrote), the live document and the disk."""
from __future__ import annotations

from cd4ml_nb.collab_merge import merge_cells, merge_text


def cell(cid: str, source: str, **more) -> dict:
    return {"id": cid, "cell_type": "code", "source": source, "metadata": {}, "outputs": [],
            "execution_count": None, **more}


BASE = [cell("a", "a = 1"), cell("b", "b = 2"), cell("c", "c = 3")]


def merged_sources(doc: list, disk: list) -> list[str]:
    return [c["source"] for c, _ in merge_cells(BASE, doc, disk)]


def test_one_side_changes_win_and_both_sides_meet():
    doc = [cell("a", "a = 10"), cell("b", "b = 2"), cell("c", "c = 3")]
    disk = [cell("a", "a = 1"), cell("b", "b = 2"), cell("c", "c = 30")]
    assert merged_sources(doc, disk) == ["a = 10", "b = 2", "c = 30"]


def test_disk_cells_without_ids_match_by_source_then_position():
    doc = [cell("a", "a = 10"), cell("b", "b = 2"), cell("c", "c = 3")]
    disk = [cell("x", "a = 1"), cell("y", "b = 20"), cell("z", "c = 3")]  # ids new, as read from a .py
    assert merged_sources(doc, disk) == ["a = 10", "b = 20", "c = 3"]


def test_a_conflict_keeps_both_texts_between_markers():
    doc = [cell("a", "a = 'typed'"), *BASE[1:]]
    disk = [cell("a", "a = 'pulled'"), *BASE[1:]]
    first = merged_sources(doc, disk)[0]
    assert "a = 'typed'" in first and "a = 'pulled'" in first and "<<<<<<<" in first


def test_cells_added_and_deleted_on_either_side():
    doc = [BASE[0], cell("n", "new_here = 1"), BASE[1]]  # deleted c, added n after a
    disk = [BASE[0], BASE[1], cell("m", "new_there = 1"), BASE[2]]  # added m after b
    assert merged_sources(doc, disk) == ["a = 1", "new_here = 1", "b = 2", "new_there = 1"]


def test_outputs_changed_only_on_disk_are_taken():
    out = [{"output_type": "stream", "name": "stdout", "text": "hi\n"}]
    doc = [cell("a", "a = 10"), *BASE[1:]]
    disk = [cell("a", "a = 1", outputs=out), *BASE[1:]]
    first, index = merge_cells(BASE, doc, disk)[0]
    assert (first["source"], first["outputs"], index) == ("a = 10", out, 0)


def test_text_merge_of_separate_lines():
    assert merge_text("x\ny\nz", "X\ny\nz", "x\ny\nZ") == "X\ny\nZ"
