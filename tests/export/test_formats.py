"""export/ owns its format table: the CLI offers exactly its formats and types, and each format names a writer that exists."""

from __future__ import annotations


def test_the_cli_offers_the_export_table_and_each_format_has_a_writer():
    from peftlab.cli import build_parser
    from peftlab.export import exporting
    from peftlab.export.formats import CONVERSIONS, FORMATS, format_choices, tensor_type_choices

    parser = build_parser()
    export = parser._subparsers._group_actions[0].choices["export"]
    options = {action.dest: action for action in export._actions}
    assert options["format"].choices == format_choices() == [*FORMATS, *CONVERSIONS] and options["format"].default == "gguf"
    assert options["tensor_type"].choices == tensor_type_choices()
    for fmt in FORMATS.values():
        assert callable(getattr(exporting, fmt.writer)) and fmt.default_type in fmt.types
        assert fmt.name in options["format"].help and f"{fmt.name}: default {fmt.default_type}" in options["tensor_type"].help


def test_a_format_writes_with_its_default_type(monkeypatch, tmp_path):
    from peftlab.cli import main
    from peftlab.export import exporting

    calls = []
    monkeypatch.setattr(exporting, "export_gguf_lora", lambda *args, **kwargs: calls.append(args))
    assert main(["export", str(tmp_path), "--format", "gguf-lora", "--output", str(tmp_path / "a.gguf")]) == 0
    assert calls == [(str(tmp_path), str(tmp_path / "a.gguf"), "f32", None, False)]
