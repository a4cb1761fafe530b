from agent.acquisition.plan import serpentine
from agent.scan import keep_range


def test_serpentine_alternates_row_direction_and_stops_at_max():
    plan = serpentine((100.0, 100.0), (1000.0, 300.0), (200.0, 100.0))
    xs = [round(f.x_um) for f in plan]
    ys = [round(f.y_um) for f in plan]
    assert xs[:5] == [100, 300, 500, 700, 900] and xs[5:10] == [900, 700, 500, 300, 100]
    assert set(ys[:5]) == {100} and set(ys[5:10]) == {200}
    assert len(plan) == 15
    assert [f.image_number for f in plan[:3]] == [1, 2, 3]
    assert len(serpentine((0, 0), (1000, 1000), (200, 100), max_fields=7)) == 7


def test_overlap_shrinks_the_step():
    plan = serpentine((0, 0), (1000, 100), (200, 100), overlap=0.5)
    assert [round(f.x_um) for f in plan][:3] == [0, 100, 200]


def test_keep_policy():
    assert list(keep_range("all", 3, 10)) == list(range(10))
    assert list(keep_range("best+-2", 1, 10)) == [0, 1, 2, 3]
    assert list(keep_range("best±1", 9, 10)) == [8, 9]
