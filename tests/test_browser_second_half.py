"""The browser walk of every other chapter (the tests are tests/test_browser.py's, on
CHAPTERS[1::2]): a file of its own so that pytest-xdist, which keeps a file on one worker
(--dist loadfile), walks the two halves on two workers."""

import test_browser
from test_browser import (  # noqa: F401  (collected here too, on this file's half)
    browser,
    lab,
    pytest_generate_tests,
    test_chapter_runs_start_to_end_in_jupyterlab_and_its_widgets_drive_their_figures,
    test_stored_chapter_renders_and_its_widgets_drive_their_figures,
    test_stored_chapter_shows_its_title_and_figures_and_no_error,
)

pytestmark = test_browser.pytestmark
HALF = 1
