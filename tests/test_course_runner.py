"""minillm.course's chapter parameters: every parameters cell parses for papermill, an unknown
parameter is an error that lists each chapter's knobs, and one of the wrong type is refused
before anything runs; without the [course] extra, the error names it."""

import pytest


def test_every_line_of_every_chapter_parameters_cell_parses_for_papermill(caplog):
    import logging

    import papermill as pm

    from minillm.course import find_chapters

    chapters = find_chapters()
    assert len(chapters) >= 10
    seen = {}
    for path in chapters:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="papermill"):
            seen[path] = list(pm.inspect_notebook(str(path)))
        assert not [r.message for r in caplog.records if "Unable to parse" in r.message], path
    from minillm.course import chapter_parameters  # the same names as papermill finds

    assert all(names == chapter_parameters(path) and "seed" in names
               for path, names in seen.items())


def test_an_unknown_chapter_parameter_is_an_error_listing_the_knobs(monkeypatch, capsys,
                                                                    tmp_path):
    import papermill as pm

    from minillm.cli import main

    ran = []
    monkeypatch.setattr(pm, "execute_notebook", lambda *a, **k: ran.append(a))
    assert main(["course", "run", "03", "-p", "nonexistent=1", "--output-dir",
                 str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "unknown chapter parameter(s) nonexistent" in err
    assert "03_transformer: device, seed, d_model, n_head, seq_len, trials, heatmap_text" in err
    assert ran == []
    # a parameter known to one of the chapters run is fine for the others (injected, unused)
    from minillm.course import check_parameters, find_chapters

    check_parameters(find_chapters(["01", "03"]), {"max_order": 3, "d_model": 32})


def test_a_parameter_of_the_wrong_type_is_refused_before_anything_runs(monkeypatch, capsys,
                                                                        tmp_path):
    import papermill as pm

    from minillm.cli import main

    ran = []
    monkeypatch.setattr(pm, "execute_notebook", lambda *a, **k: ran.append(a))
    assert main(["course", "run", "03", "-p", "trials=abc", "--output-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "-p trials='abc' is a str, but 03_transformer sets trials = " in err
    assert err.strip().endswith(": pass a whole number")
    assert ran == [] and not list(tmp_path.iterdir())
    # what the chapters' defaults allow: an int for a float, a tuple for a list, any for None
    from minillm.course import check_parameters, find_chapters

    check_parameters(find_chapters(["05"]), {"lr": 1, "eval_factors": (1, 2), "steps": 10})
    with pytest.raises(ValueError, match="-p full=1 is a int, but 05_positions sets full = "
                                         "False: pass True or False"):
        check_parameters(find_chapters(["05"]), {"full": 1})


def test_running_chapters_without_the_course_extra_names_the_extra(monkeypatch, capsys):
    import importlib.util

    from minillm.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "papermill" else real(name, *a))
    assert main(["course", "run", "09"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ('minillm course: error: running chapters needs the [course] extra '
                   '(papermill not installed): pip install "minillm[course]"')


def test_without_a_chapters_folder_the_error_says_where_to_run(tmp_path):
    from minillm.course import find_chapters

    with pytest.raises(ValueError, match="no chapters in .*: run from a clone's root"):
        find_chapters(["09"], folder=tmp_path)
