"""minillm.course's chapter parameters: every parameters cell parses for papermill, and an unknown
parameter is an error that lists each chapter's knobs."""


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
