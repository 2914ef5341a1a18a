import pytest

from shared_model.data.movielens import load_movielens


@pytest.mark.parametrize("tags", ["", "userId,movieId,tag,timestamp\n", None])
def test_load_movielens_with_empty_or_missing_tags(tmp_path, tags):
    (tmp_path / "movies.csv").write_text(
        "movieId,title,genres\n1,A (1995),Comedy\n2,B (1996),Drama\n"
    )
    (tmp_path / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n2,2,3.5,964982800\n"
    )
    if tags is not None:
        (tmp_path / "tags.csv").write_text(tags)
    ml = load_movielens(tmp_path)
    assert len(ml.tag_user) == 0 and len(ml.rating) == 2 and ml.n_users == 2
