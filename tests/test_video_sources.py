"""DAVIS 2017 from its own files and folders of video files: tiny fixtures."""

import pickle

import dataset_files
import numpy as np
import pytest

from lavin_jax.data import clips
from lavin_jax.data import davis
from lavin_jax.data import specs
from lavin_jax.data import videos


def test_windows():
  assert clips.windows([7, 3, 0], 0) == [(0, 0, 7), (1, 0, 3)]
  assert clips.windows([7, 3], 3) == [(0, 0, 3), (0, 3, 3), (1, 0, 3)]
  assert clips.windows([2], 3) == []
  with pytest.raises(ValueError, match="clip_frames must be >= 0"):
    clips.windows([2], -1)


@pytest.fixture(scope="module")
def davis_root(tmp_path_factory):
  return dataset_files.write_davis(tmp_path_factory.mktemp("davis"))


def test_davis_clips_keep_object_ids(davis_root):
  whole = specs.get_source(f"davis:{davis_root}")
  assert whole.sequences == ["bear"] and len(whole) == 1
  assert whole.keys == ("video", "instances", "valid")
  clip = whole[0]
  assert clip["video"].shape == (6, 24, 32, 3) and clip["instances"].shape == (6, 24, 32)
  for f in range(6):
    image, ids = dataset_files.davis_frame(0, f)
    assert np.abs(clip["video"][f].astype(int) - image).mean() < 3
    np.testing.assert_array_equal(clip["instances"][f], np.where(ids == 255, 0, ids))
    np.testing.assert_array_equal(clip["valid"][f], ids != 255)
  assert not clip["valid"][0, 0, 0] and clip["valid"][1].all()
  windows = specs.get_source(f"davis:{davis_root / 'DAVIS'},split=train,clip_frames=4")
  assert len(windows) == 1  # Frames 4-5 are no whole window.
  np.testing.assert_array_equal(windows[0]["instances"], clip["instances"][:4])
  assert len(davis.Davis(davis_root, "val", clip_frames=2)) == 2
  restored = pickle.loads(pickle.dumps(windows))  # Grain workers pickle sources.
  np.testing.assert_array_equal(restored[0]["video"], windows[0]["video"])


def test_davis_errors(davis_root, tmp_path):
  with pytest.raises(FileNotFoundError, match="No DAVIS 2017 files under .*Unpack DAVIS-2017"):
    specs.get_source(f"davis:{tmp_path}")
  with pytest.raises(ValueError, match="Unknown DAVIS split 'test'"):
    specs.get_source(f"davis:{davis_root},split=test")
  with pytest.raises(ValueError, match="no sequence has 9 frames"):
    specs.get_source(f"davis:{davis_root},clip_frames=9")
  with pytest.raises(ValueError, match="clip_frames=x' in .* needs a whole number"):
    specs.get_source(f"davis:{davis_root},clip_frames=x")
  dataset_files.write_davis(tmp_path)
  (tmp_path / "DAVIS" / "Annotations" / "480p" / "bear" / "00003.png").unlink()
  with pytest.raises(FileNotFoundError, match=r"bear: no annotation for 1 frame.*00003.png"):
    davis.Davis(tmp_path)
  with pytest.raises(ValueError, match="smaller than the requested resolution"):
    davis.Davis(tmp_path, "val", min_size=32)


def test_video_files_are_cut_into_clips(tmp_path):
  written = dataset_files.write_videos(tmp_path)
  whole = specs.get_source(f"videos:{tmp_path}")
  assert [p.name for p in whole.paths] == ["first.avi", "second.mp4"]  # Sorted by path.
  assert len(whole) == 2 and whole.keys == ("video",)
  np.testing.assert_array_equal(whole[0]["video"], written["a/first.avi"])  # Lossless.
  second = whole[1]["video"]
  assert second.shape == (5, 24, 32, 3) and second.dtype == np.uint8
  assert np.abs(second.astype(int) - written["second.mp4"]).mean() < 6
  cut = videos.VideoFiles(tmp_path, clip_frames=3)
  assert cut.windows == [(0, 0, 3), (0, 3, 3), (1, 0, 3)]
  np.testing.assert_array_equal(cut[1]["video"], written["a/first.avi"][3:6])
  np.testing.assert_array_equal(pickle.loads(pickle.dumps(cut))[1]["video"], cut[1]["video"])


def test_video_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    specs.get_source(f"videos:{tmp_path / 'none'}")
  with pytest.raises(ValueError, match="holds no videos"):
    specs.get_source(f"videos:{tmp_path}")
  (tmp_path / "broken.mp4").write_bytes(b"not a video")
  with pytest.raises(ValueError, match=r"Cannot read video .*broken.mp4.*Re-encode it"):
    specs.get_source(f"videos:{tmp_path}")
  (tmp_path / "broken.mp4").unlink()
  dataset_files.write_videos(tmp_path)
  with pytest.raises(ValueError, match="smaller than the requested resolution"):
    videos.VideoFiles(tmp_path, min_size=25)
  with pytest.raises(ValueError, match=r"ended before frame 8"):
    videos.read_frames(tmp_path / "a" / "first.avi", 4, 4)
