"""tools/misc/check_docs.py: README.md and docs/ hold one copy of every paragraph and
link only to files that exist."""
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_check_docs():
    # tools/ is not a package: load the script by path, as `make lint` runs it.
    spec = importlib.util.spec_from_file_location('check_docs',
                                                  ROOT / 'tools' / 'misc' / 'check_docs.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


check_docs = load_check_docs()
LONG = ('A paragraph long enough to count: it says what the configs hold, where the '
        'checkpoint goes, which command measures the numbers beside it and why the '
        'fragment defines variables rather than the model, so that a reader finds it once.')
assert len(LONG) >= 200


def test_the_project_docs_pass():
    assert check_docs.main([]) == 0


def test_a_paragraph_copied_across_files_fails(tmp_path, capsys):
    one, two = tmp_path / 'one.md', tmp_path / 'two.md'
    one.write_text(f'# One\n\n{LONG}\n')
    # The copy is re-wrapped: whitespace does not hide it.
    two.write_text('# Two\n\n' + LONG.replace(': ', ':\n') + '\n\nSomething else.\n')
    assert check_docs.main([str(one), str(two), '--min-chars', '200']) == 1
    out = capsys.readouterr().out
    assert 'written 2 times' in out and 'one.md:3' in out and 'two.md:3' in out


def test_short_repeats_and_code_blocks_below_the_limit_pass(tmp_path):
    page = tmp_path / 'page.md'
    page.write_text('Short line.\n\nShort line.\n\n```shell\nmake demo\n```\n\n'
                    '```shell\nmake demo\n```\n')
    assert check_docs.main([str(page)]) == 0


def test_a_code_block_is_one_block_blank_lines_included(tmp_path):
    page = tmp_path / 'page.md'
    block = '```\n' + LONG[:120] + '\n\n' + LONG[120:] + '\n```\n'
    page.write_text(block + '\ntext\n\n' + block)
    assert check_docs.main([str(page)]) == 1
    assert [line for line, _ in check_docs.blocks(block)] == [1]


def test_a_link_to_a_missing_file_fails(tmp_path, capsys):
    (tmp_path / 'there.md').write_text('# There\n')
    page = tmp_path / 'page.md'
    page.write_text('[ok](there.md#there) [anchor](#here) [web](https://example.org/x)\n\n'
                    '![gone](images/gone.png)\n\n```\n[in code](nowhere.md)\n```\n')
    assert check_docs.main([str(page)]) == 1
    out = capsys.readouterr().out
    assert 'images/gone.png' in out and 'nowhere' not in out and 'there.md' not in out
