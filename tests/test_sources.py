"""Sources: image folders, template folders, photographs, TFDS, the factory."""

import pickle

import ml_collections
import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

from lavin_jax.data import sources
from lavin_jax.data import specs


def _save(path, array):
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(array).save(path)
  return array


def _random_image(rng, h, w, channels=3):
  shape = (h, w, channels) if channels > 1 else (h, w)
  return rng.integers(0, 256, shape, dtype=np.uint8)


# ----------------------------------------------------------------------------------
# Image folders.
# ----------------------------------------------------------------------------------
def test_image_folder_reads_every_image_sorted(tmp_path):
  rng = np.random.default_rng(0)
  b = _save(tmp_path / "b.png", _random_image(rng, 20, 30))
  a = _save(tmp_path / "sub" / "a.png", _random_image(rng, 24, 16))
  gray = _save(tmp_path / "c_gray.png", _random_image(rng, 18, 18, 1))
  rgba = _save(tmp_path / "d_rgba.png", _random_image(rng, 16, 16, 4))
  (tmp_path / "notes.txt").write_text("not an image, ignored")
  source = sources.image_folder(tmp_path)
  assert len(source) == 4 and source.keys == ("image",)
  images = [source[i]["image"] for i in range(4)]  # b, c_gray, d_rgba, sub/a
  np.testing.assert_array_equal(images[0], b)
  np.testing.assert_array_equal(images[1], np.repeat(gray[..., None], 3, -1))
  np.testing.assert_array_equal(images[2], rgba[..., :3])
  np.testing.assert_array_equal(images[3], a)
  assert all(im.dtype == np.uint8 and im.shape[-1] == 3 for im in images)


def test_jpeg_is_read(tmp_path):
  image = np.full((16, 16, 3), (200, 40, 90), np.uint8)
  Image.fromarray(image).save(tmp_path / "x.jpg", quality=95)
  out = sources.image_folder(tmp_path)[0]["image"]
  assert np.abs(out.astype(int) - image).max() <= 3


def test_image_folder_missing_or_empty(tmp_path):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    sources.image_folder(tmp_path / "nowhere")
  (tmp_path / "readme.txt").write_text("x")
  with pytest.raises(ValueError, match=f"{tmp_path} holds no images"):
    sources.image_folder(tmp_path)


def test_corrupt_image_is_named_when_the_source_is_made(tmp_path):
  _save(tmp_path / "good.png", np.zeros((8, 8, 3), np.uint8))
  (tmp_path / "broken.png").write_bytes(b"this is not a png")
  with pytest.raises(ValueError, match=r"Cannot read image .*broken\.png.*Replace or"):
    sources.image_folder(tmp_path)


def test_truncated_image_is_named_when_read(tmp_path):
  _save(tmp_path / "cut.png", _random_image(np.random.default_rng(1), 64, 64))
  data = (tmp_path / "cut.png").read_bytes()
  (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
  source = sources.image_folder(tmp_path)  # The header is intact.
  with pytest.raises(ValueError, match=r"Cannot read image .*cut\.png"):
    source[0]  # pylint: disable=pointless-statement


def test_image_smaller_than_the_resolution(tmp_path):
  _save(tmp_path / "big.png", np.zeros((64, 64, 3), np.uint8))
  _save(tmp_path / "small.png", np.zeros((64, 40, 3), np.uint8))
  assert len(sources.image_folder(tmp_path, min_size=40)) == 2
  with pytest.raises(
    ValueError,
    match=r"small\.png is 64x40 pixels, smaller than the "
    r"requested resolution 48x48",
  ):
    sources.image_folder(tmp_path, min_size=48)
  with pytest.raises(ValueError, match=r"small\.png"):
    sources.read_image(tmp_path / "small.png", min_size=(32, 48))
  with pytest.raises(FileNotFoundError, match="No image file"):
    sources.read_image(tmp_path / "absent.png")


# ----------------------------------------------------------------------------------
# Template folders.
# ----------------------------------------------------------------------------------
def test_template_folder_pairs(tmp_path):
  rng = np.random.default_rng(2)
  pairs = {}
  for name in ("zeta", "alpha", "mid_input_x"):
    pairs[name] = (
      _save(tmp_path / f"{name}_input.png", _random_image(rng, 12, 20)),
      _save(tmp_path / f"{name}_target.png", _random_image(rng, 12, 20)),
    )
  _save(tmp_path / "unrelated.png", _random_image(rng, 8, 8))
  source = sources.TemplateFolderSource(tmp_path)
  assert len(source) == 3 and source.names == ["alpha", "mid_input_x", "zeta"]
  for i, name in enumerate(source.names):
    example = source[i]
    assert example["name"] == name
    np.testing.assert_array_equal(example["input"], pairs[name][0])
    np.testing.assert_array_equal(example["target"], pairs[name][1])


def test_template_folder_unmatched_names(tmp_path):
  image = np.zeros((8, 8, 3), np.uint8)
  _save(tmp_path / "a_input.png", image)
  _save(tmp_path / "a_target.png", image)
  _save(tmp_path / "b_input.png", image)
  _save(tmp_path / "c_target.png", image)
  with pytest.raises(ValueError) as info:
    sources.TemplateFolderSource(tmp_path)
  message = str(info.value)
  assert "b_input.png (no b_target.png)" in message
  assert "c_target.png (no c_input.png)" in message
  assert "a_input" not in message and str(tmp_path) in message


def test_template_folder_without_pairs(tmp_path):
  _save(tmp_path / "photo.png", np.zeros((8, 8, 3), np.uint8))
  with pytest.raises(ValueError, match=f"{tmp_path} has no pairs.*<name>_input.png"):
    sources.TemplateFolderSource(tmp_path)
  with pytest.raises(FileNotFoundError, match="does not exist"):
    sources.TemplateFolderSource(tmp_path / "missing")


def test_template_folder_bad_images(tmp_path):
  _save(tmp_path / "a_input.png", np.zeros((8, 8, 3), np.uint8))
  (tmp_path / "a_target.png").write_bytes(b"\x89PNG garbage")
  with pytest.raises(ValueError, match=r"a_target\.png"):
    sources.TemplateFolderSource(tmp_path)
  _save(tmp_path / "a_target.png", np.zeros((8, 8, 3), np.uint8))
  with pytest.raises(ValueError, match=r"a_input\.png is 8x8 pixels"):
    sources.TemplateFolderSource(tmp_path, min_size=16)


# ----------------------------------------------------------------------------------
# Photographs shipped with scikit-image.
# ----------------------------------------------------------------------------------
def test_skimage_photographs():
  import skimage.data  # pylint: disable=g-import-not-at-top

  source = specs.get_source("photos")
  assert len(source) == len(sources.SKIMAGE_PHOTOGRAPHS) >= 8
  np.testing.assert_array_equal(source[0]["image"], skimage.data.astronaut())
  for i in range(len(source)):
    image = source[i]["image"]
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[-1] == 3
    assert min(image.shape[:2]) >= 256
    # Photographs in colour: the channels differ.
    assert np.abs(image[..., 0].astype(int) - image[..., 2]).mean() > 5
  with pytest.raises(ValueError, match="smaller than the requested resolution"):
    specs.get_source("photos,min_size=512")


# ----------------------------------------------------------------------------------
# TFDS by name.
# ----------------------------------------------------------------------------------
class LavinTestPhotos(tfds.core.GeneratorBasedBuilder):
  """A small TFDS data set with non-schema feature names."""

  VERSION = tfds.core.Version("1.0.0")
  code_path = None  # No checksums to look up (see synthetic.py).

  def _info(self):
    return tfds.core.DatasetInfo(
      builder=self,
      features=tfds.features.FeaturesDict(
        {
          "photo": tfds.features.Tensor(shape=(16, 16, 3), dtype=np.uint8),
          "gray": tfds.features.Tensor(shape=(16, 16), dtype=np.uint8),
          "meta": {"depth": tfds.features.Tensor(shape=(16, 16), dtype=np.float32)},
        }
      ),
    )

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples(6)}

  def _generate_examples(self, n):
    for i in range(n):
      yield (
        i,
        {
          "photo": np.full((16, 16, 3), i, np.uint8),
          "gray": np.full((16, 16), 10 * i, np.uint8),
          "meta": {"depth": np.full((16, 16), i + 0.5, np.float32)},
        },
      )


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
  data_dir = tmp_path_factory.mktemp("tfds")
  LavinTestPhotos(data_dir=data_dir, file_format="array_record").download_and_prepare()
  return str(data_dir)


def test_tfds_source_maps_features(tfds_dir):
  source = sources.TfdsSource(
    "lavin_test_photos", "train", tfds_dir, features={"image": "photo", "depth": "meta/depth"}
  )
  assert len(source) == 6 and source.keys == ("image", "depth")
  values = set()
  for i in range(6):
    example = source[i]
    value = int(example["image"][0, 0, 0])
    values.add(value)
    assert example["image"].shape == (16, 16, 3)
    np.testing.assert_array_equal(example["depth"], value + 0.5)
  assert values == set(range(6))
  gray = sources.TfdsSource("lavin_test_photos", "train", tfds_dir, features={"image": "gray"})[0][
    "image"
  ]
  assert gray.shape == (16, 16, 3)
  np.testing.assert_array_equal(gray[..., 0], gray[..., 2])
  restored = pickle.loads(pickle.dumps(source))  # Grain workers pickle sources.
  np.testing.assert_array_equal(restored[3]["image"], source[3]["image"])


def test_tfds_source_by_spec(tfds_dir):
  spec = ml_collections.ConfigDict(
    {"kind": "tfds", "name": "lavin_test_photos", "split": "train[:4]", "data_dir": tfds_dir}
  )
  with pytest.raises(ValueError, match='no feature is mapped to "image"'):
    specs.get_source(spec)  # 'photo' is not a schema name.
  source = specs.get_source(f"tfds:lavin_test_photos,data_dir={tfds_dir},image=photo")
  assert source.keys == ("image",) and len(source) == 6


def test_tfds_bad_inputs(tfds_dir, tmp_path):
  with pytest.raises(ValueError, match=r"no feature\(s\) \{'image': 'picture'\}"):
    sources.TfdsSource("lavin_test_photos", "train", tfds_dir, features={"image": "picture"})
  with pytest.raises(FileNotFoundError, match="not prepared in"):
    sources.TfdsSource("lavin_test_photos", "train", str(tmp_path))
  with pytest.raises(FileNotFoundError, match="neither registered nor prepared"):
    specs.get_source(f"tfds:no_such_data_set_here,data_dir={tmp_path}")
  with pytest.raises(ValueError, match="smaller than the requested resolution"):
    sources.TfdsSource(
      "lavin_test_photos", "train", tfds_dir, features={"image": "photo"}, min_size=32
    )[0]


def test_tfds_builders_under_mock_data():
  """The real builders; mock_data stands in for the prepared files (random values)."""
  with tfds.testing.mock_data(num_examples=3):
    nyu = specs.get_source("tfds:nyu_depth_v2,split=validation")
    assert nyu.keys == ("image", "depth") and len(nyu) == 3 and nyu.class_names is None
    example = nyu[0]
    assert example["image"].shape == (480, 640, 3) and example["image"].dtype == np.uint8
    assert example["depth"].shape == (480, 640) and example["depth"].dtype == np.float32

    ade = specs.get_source("tfds:scene_parse150,split=validation")
    assert ade.keys == ("image", "semantic")  # The preset reads 'annotation'.
    assert ade.class_names[0] == "other" and ade.class_names[150] == "flag"
    example = ade[1]
    assert example["semantic"].dtype == np.int32
    assert example["semantic"].ndim == 2  # Mock data draws each feature's size apart.

    div2k = specs.get_source("tfds:div2k/bicubic_x2")
    assert div2k.keys == ("image",) and div2k.features == {"image": "hr"}
    low = specs.get_source({"kind": "tfds", "name": "div2k/bicubic_x2", "image": "lr"})
    assert low.features == {"image": "lr"}
    with pytest.raises(ValueError, match=r"\['colour'\] are not schema keys"):
      specs.get_source("tfds:div2k/bicubic_x2,colour=hr")
    with pytest.raises(ValueError, match=r"no feature\(s\) \{'depth': 'hr_depth'\}"):
      specs.get_source("tfds:div2k/bicubic_x2,depth=hr_depth")


def test_values_are_converted_to_the_schema():
  gray_rgb = np.repeat(np.arange(6, dtype=np.uint8).reshape(2, 3, 1), 3, -1)
  np.testing.assert_array_equal(sources.to_schema("semantic", gray_rgb), np.arange(6).reshape(2, 3))
  assert sources.to_schema("instances", gray_rgb[..., :1]).dtype == np.int32
  depth = sources.to_schema("depth", np.ones((4, 5, 1), np.float16))
  assert depth.shape == (4, 5) and depth.dtype == np.float32
  assert sources.to_schema("image", np.zeros((4, 5), np.uint8)).shape == (4, 5, 3)
  assert sources.to_schema("valid", np.ones((4, 5, 1), np.uint8)).dtype == bool
  assert sources.to_schema("boxes", [1, 2, 3, 4]).shape == (1, 4)
  assert sources.to_schema("keypoints", np.zeros(102)).shape == (2, 17, 3)


# ----------------------------------------------------------------------------------
# Factory.
# ----------------------------------------------------------------------------------
def test_parse_spec():
  assert specs.parse_spec("tfds:coco/2017,split=validation,min_size=64") == {
    "kind": "tfds",
    "name": "coco/2017",
    "split": "validation",
    "min_size": 64,
  }
  assert specs.parse_spec("folder:/data/x") == {"kind": "folder", "folder": "/data/x"}
  assert specs.parse_spec("photos") == {"kind": "photos"}
  assert specs.parse_spec("synthetic:tiny,content=clips") == {
    "kind": "synthetic",
    "name": "tiny",
    "content": "clips",
  }


def test_get_source_folder_forms(tmp_path):
  _save(tmp_path / "a_input.png", np.zeros((8, 8, 3), np.uint8))
  _save(tmp_path / "a_target.png", np.zeros((8, 8, 3), np.uint8))
  assert len(specs.get_source(f"folder:{tmp_path}")) == 2
  assert len(specs.get_source({"kind": "folder", "path": str(tmp_path)})) == 2
  assert len(specs.get_source(f"templates:{tmp_path}")) == 1
  config = ml_collections.ConfigDict({"kind": "templates", "folder": str(tmp_path)})
  assert len(specs.get_source(config)) == 1


def test_get_source_bad_specs(tmp_path):
  with pytest.raises(ValueError, match=r"Unknown source kind 'imagenet'.*folder"):
    specs.get_source("imagenet:/x")
  with pytest.raises(ValueError, match="Unknown source kind None"):
    specs.get_source({"path": "/x"})
  with pytest.raises(ValueError, match="takes no argument"):
    specs.get_source("photos:astronaut")
  with pytest.raises(ValueError, match="not key=value"):
    specs.get_source(f"folder:{tmp_path},sorted")
  with pytest.raises(ValueError, match=r"Bad options .*'colour'"):
    specs.get_source(f"folder:{tmp_path},colour=red")
