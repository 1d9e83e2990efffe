"""The Read view's presentation rules: the film sized to the screen, the columns, the marks drawn."""

from __future__ import annotations

from cxr_core.artifacts.review_store import Draft, Verdict
from cxr_core.evaluation.reading import film_calls
from dashboard import review_read
from dashboard.marks import Mark


def test_the_film_fills_the_room_under_its_top_and_never_exceeds_its_width():
    laptop = {"width": 1024, "height": 768, "top": 190, "column": 320}
    assert review_read.film_height(laptop, (256, 256), 760) == 320  # width-bound: no empty band
    tall = {"width": 1440, "height": 900, "top": 180, "column": 700}
    room = 900 - 180 - review_read.CAPTION_ROOM
    assert review_read.film_height(tall, (256, 256), 760) == room  # height-bound
    assert review_read.film_height(tall, (3000, 2500), 600) == 600  # capped
    assert review_read.film_height(None, (256, 256), 760) == review_read.FILM_HEIGHT
    tiny = {"width": 800, "height": 300, "top": 250, "column": 300}
    assert review_read.film_height(tiny, (256, 256), 760) == 220  # never unusably small


def test_narrow_screens_give_the_grid_the_width_its_rows_need():
    wide, narrow = {"width": 1440}, {"width": 1024}
    film, grid = review_read.column_weights(narrow, show_model=True)
    assert grid > film  # model, label and outcome columns beside the calls
    assert review_read.column_weights(wide, True)[0] > review_read.column_weights(narrow, True)[0]
    assert review_read.column_weights(None, False) == review_read.column_weights(narrow, False)


def test_marks_drawn_are_the_calls_as_they_stand_dashed_until_saved():
    saved = Verdict(1, "a.png", "Edema", "agree", "", "AB", "t", "present", point=(0.2, 0.3))
    moved = Draft(1, "a.png", "Mass", "AB", "present", None, "", "", (0.5, 0.5), None, "t")
    calls = film_calls(("Edema", "Mass", "Nodule"), [saved], [moved], "a.png")
    drawn = review_read.drawn_marks(calls, ("red", "blue", "green"))
    assert drawn == [
        ("Edema", Mark(point=(0.2, 0.3)), "red", True),
        ("Mass", Mark(point=(0.5, 0.5)), "blue", False),
    ]
