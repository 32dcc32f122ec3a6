import pytest

from training.layouts import is_system_file, label_from_path

CLASSES = ("cat", "dog")


@pytest.mark.parametrize(
    ("path", "label"),
    [
        ("train/cat.0.jpg", "cat"),  # Kaggle train.zip
        ("train/dog.12499.jpg", "dog"),
        ("cat.7.jpg", "cat"),  # Kaggle files at the archive root
        ("PetImages/Cat/0.jpg", "cat"),  # Microsoft PetImages, capitalised folders
        ("PetImages/Dog/11.jpg", "dog"),
        ("train/cats/a.jpg", "cat"),  # class folders, plural
        ("test/dogs/b.png", "dog"),
        ("dataset/train/cat/c.jpg", "cat"),  # singular, nested deeper
        ("DOGS/d.jpeg", "dog"),  # at the root, any case
        ("train/cats/cat.3.jpg", "cat"),  # name and folder agree
    ],
)
def test_label_comes_from_file_name_or_nearest_class_folder(path, label):
    assert label_from_path(path, CLASSES) == label


@pytest.mark.parametrize(
    "path",
    [
        "test1/1.jpg",  # Kaggle's unlabelled test set
        "images/x.jpg",
        "train/cats/dog.1.jpg",  # folder and name disagree: not guessed
        "catalog/x.jpg",  # a class name inside a longer word is not a label
        "cat",
    ],
)
def test_unlabelled_paths_give_none(path):
    assert label_from_path(path, CLASSES) is None


@pytest.mark.parametrize(
    "path", ["__MACOSX/train/._cat.1.jpg", "train/.DS_Store", "PetImages/Cat/Thumbs.db", "train/._cat.1.jpg"]
)
def test_system_files_are_recognised(path):
    assert is_system_file(path)


def test_ordinary_images_are_not_system_files():
    assert not is_system_file("PetImages/Cat/1.jpg")
