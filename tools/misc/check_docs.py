"""Keep one copy of every document: README.md and docs/ must not say the same thing twice.

Fails (exit status 1, with every offence listed) when

* a paragraph, table or fenced code block of ``--min-chars`` characters or more (200 by
  default, whitespace collapsed) appears twice across the Markdown files, in one file
  or in two: a copy that drifts from the original is how documents go stale;
* a relative link or image points at no file.

``make lint`` runs it from the repository root:

    python tools/misc/check_docs.py [FILES...] [--min-chars N]

Without files it checks README.md and every ``*.md`` under docs/.
"""
import argparse
import re
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FENCE = re.compile(r'^\s*(```|~~~)')
# [text](target) and ![alt](target); the target ends at whitespace or ')'.
LINK = re.compile(r'!?\[[^\]]*\]\(([^)\s]+)[^)]*\)')


def blocks(text):
    """``(first line number, text)`` of every paragraph and fenced code block.

    A blank line ends a paragraph; a fenced block is one block whatever it holds, blank
    lines included, so that a copied command listing counts as one copy.
    """
    found, current, start, fence = [], [], 0, None
    for number, line in enumerate(text.splitlines(), 1):
        match = FENCE.match(line)
        if fence is not None:
            current.append(line)
            if match and match.group(1) == fence:
                found.append((start, '\n'.join(current)))
                current, fence = [], None
            continue
        if match:
            if current:
                found.append((start, '\n'.join(current)))
            current, start, fence = [line], number, match.group(1)
        elif line.strip():
            if not current:
                start = number
            current.append(line)
        elif current:
            found.append((start, '\n'.join(current)))
            current = []
    if current:
        found.append((start, '\n'.join(current)))
    return found


def normalise(block):
    return ' '.join(block.split())


def repeated_blocks(files, min_chars):
    """``{normalised text: [(file, line), ...]}`` of the long blocks found twice or more."""
    seen = defaultdict(list)
    for path in files:
        for line, block in blocks(path.read_text(encoding='utf-8')):
            text = normalise(block)
            if len(text) >= min_chars:
                seen[text].append((path, line))
    return {text: places for text, places in seen.items() if len(places) > 1}


def broken_links(files):
    """``(file, line, target)`` of every relative link whose file does not exist."""
    broken = []
    for path in files:
        in_fence = False
        for number, line in enumerate(path.read_text(encoding='utf-8').splitlines(), 1):
            if FENCE.match(line):
                in_fence = not in_fence
            if in_fence:
                continue
            for target in LINK.findall(line):
                if re.match(r'[a-z][a-z0-9+.-]*:', target) or target.startswith('#'):
                    continue  # a URL or an anchor of this page
                file_part = target.split('#', 1)[0]
                if not (path.parent / file_part).exists():
                    broken.append((path, number, target))
    return broken


def default_files():
    return [ROOT / 'README.md', *sorted((ROOT / 'docs').rglob('*.md'))]


def relative(path):
    try:
        return path.resolve().relative_to(ROOT)
    except ValueError:
        return path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('files', nargs='*', type=Path, help='Markdown files to check')
    parser.add_argument('--min-chars', type=int, default=200,
                        help='shortest block that must not appear twice (characters)')
    args = parser.parse_args(argv)
    files = args.files or default_files()

    problems = []
    for text, places in repeated_blocks(files, args.min_chars).items():
        where = ', '.join(f'{relative(p)}:{line}' for p, line in places)
        problems.append(f'written {len(places)} times ({where}): {text[:100]}...')
    for path, line, target in broken_links(files):
        problems.append(f'{relative(path)}:{line}: link to a missing file: {target}')
    for problem in problems:
        print(problem)
    if problems:
        print(f'check_docs: {len(problems)} problem(s) in {len(files)} files; keep one copy '
              'and link to it')
        return 1
    print(f'check_docs: {len(files)} files, no block of {args.min_chars}+ characters '
          'written twice, no broken link')
    return 0


if __name__ == '__main__':
    sys.exit(main())
