"""Offline generation keeps to the model's context by the rule serve applies: soft prompt + prompt + new tokens must fit."""

import pytest

from peftlab.cli import main
from tests.conftest import TOY_ROWS, write_jsonl

LONG = " ".join(["#Person1#: Hello, how are you today? #Person2#: I am fine, thank you."] * 40)  # about 800 tokens


def one_error_line(capsys) -> str:
    """The one error line (generate prints its progress to stderr before it)."""
    err = capsys.readouterr().err.strip()
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert "Traceback" not in err and len(errors) == 1, err
    return errors[0]


@pytest.mark.parametrize("command", ["eval", "generate"])
def test_a_row_past_the_context_is_refused_naming_it(command, tiny_llama, tmp_path, capsys):
    """The tiny Llama has 512 positions; the long row's tokens alone pass them (it used to run past them, exit 0)."""
    rows = [{"dialogue": r["dialogue"], "summary": r["summary"]} for r in TOY_ROWS[:2]] + [{"dialogue": LONG, "summary": "Long."}]
    data = write_jsonl(tmp_path / "rows.jsonl", rows)
    argv = [command, "--model", tiny_llama, "--data", str(data), "--max-new-tokens", "4", "--dtype", "fp32"]
    assert main(argv) == 2
    line = one_error_line(capsys)
    assert "rows.jsonl line 3" in line and "exceed the model's context of 512 positions" in line


def test_the_soft_prompt_counts(tiny_llama, tmp_path, capsys):
    """A prompt that fits alone, but not behind prompt tuning's 64 virtual tokens, is refused with them named."""
    from peftlab.generation import GenerationSettings, generate_ids
    from peftlab.errors import PeftlabError
    from peftlab.methods import BuildContext, get_method
    from peftlab.models import load_model

    loaded = load_model(tiny_llama, "fp32")
    method = get_method("prompt-tuning")
    model = method.build(loaded.model, method.parse_settings({"num_virtual_tokens": 64}), BuildContext(False, total_steps=1)).eval()
    fits_alone = [[5] * 500]  # 500 + 8 new tokens <= 512; with 64 virtual tokens it does not fit
    with pytest.raises(PeftlabError, match=r"prompt 1: 500 prompt tokens \+ 64 of the adapter's soft prompt \+ 8 new tokens"):
        generate_ids(model, loaded.tokenizer, fits_alone, False, GenerationSettings(max_new_tokens=8, batch_size=1))
