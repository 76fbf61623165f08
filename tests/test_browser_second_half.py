"""The browser walk of every other chapter (the test is tests/test_browser.py's `walk`): a file of
its own so that pytest-xdist, which keeps a file on one worker (--dist loadfile), runs the two
halves of the walk on two workers."""

import pytest
import test_browser
from test_browser import browser, lab  # noqa: F401  (module-scoped: a server per file)

pytestmark = test_browser.pytestmark


@pytest.mark.parametrize("notebook", test_browser.CHAPTERS[1::2])
def test_chapter_runs_in_jupyterlab_and_its_widgets_drive_their_figures(lab, browser, notebook):  # noqa: F811
    test_browser.walk(lab, browser, notebook)
