"""Defaults of the in-context data: the pipeline, stored latents, the paper's mixture."""

import ml_collections

from lavin_jax.configs import tasks

# The paper's training mixture (appendix B.1, Table 4): training examples per task, summed
# over the data sets the table lists for it. The paper gives no sampling ratios; a task's
# weight here is its example count, as one concatenation of every task's data would draw
# (stills 94 %, clips 6 %; within a task, `lavin_jax.data.mixture` draws each source by
# its size). Foreground segmentation is not trained (the paper evaluates it as unseen).
# Pose estimation and pose-to-image (COCO, 64,115 each) count once the task table has
# them.
PAPER_EXAMPLES = {
  "detection": 117_266 + 1_728_778,  # COCO 2017, Objects365
  "instance_segmentation": 117_266 + 19_020 + 3_457,  # COCO, ADE20K, Cityscapes
  "panoptic_segmentation": 117_266 + 19_020 + 3_457,
  "pose_estimation": 64_115,  # COCO
  "pose_to_image": 64_115,
  "depth_estimation": 1_281_167,  # ImageNet-1K, Depth Anything V2 labels
  "depth_to_image": 1_281_167,
  "normal_estimation": 117_266 + 19_020 + 3_457,  # StableNormal labels
  "normal_to_image": 117_266 + 19_020 + 3_457,
  "canny_edges": 1_281_167 + 117_266,  # ImageNet-1K, COCO
  "inpainting": 1_281_167 + 117_266,
  "colorization": 1_281_167 + 117_266,
  "de_glass_blur": 1_281_167 + 117_266,
  "de_motion_blur": 1_281_167 + 117_266,
  "de_raining": 1_281_167 + 117_266,
  "frame_prediction": 7_629 + 570_465 + 48_689,  # UCF101, Kinetics-700, Kubric
  "video_depth": 48_689,  # Kubric
  "depth_to_video": 48_689,
  "video_normals": 48_689,
  "normal_to_video": 48_689,
  "optical_flow": 48_689,
  "video_instance_segmentation": 48_689,
}
# The paper's data sets, by the names its sources take in a config (`paper_sources`).
PAPER_DATA_SETS = (
  "coco",
  "objects365",
  "ade20k",
  "cityscapes",
  "imagenet",
  "ucf101",
  "kinetics700",
  "kubric",
)


def pipeline(media: str = "image") -> ml_collections.ConfigDict:
  """Pipeline settings: every task of `media` ('image' or 'video') with weight 1."""
  c = ml_collections.ConfigDict()
  c.resolution = 256  # Square side in pixels.
  c.batch_size = 8  # Global; each process gets batch_size / process_count.
  c.k_min = 1  # Context pairs per episode, uniform in [k_min, k_max] (released: 1-8).
  c.k_max = 8
  # Padded context sizes (lavin_jax.data.buckets): K in (previous bound, b] is padded to
  # b, every batch from one bucket, K's distribution unchanged; k_max is always a bound.
  # (): every K its own bucket (a batch has one K, no padding; a compiled step per K);
  # (k_max,): every episode padded to k_max.
  c.k_buckets = ()
  c.task_weights = tasks.weights(media)
  c.random_crop = True  # False: centred square crops.
  c.allow_upscale = False  # False: an example smaller than the resolution is an error.
  c.seed = 0
  # An example with NaN or inf values stops the run naming it (False), or is replaced by
  # another draw and counted (True).
  c.skip_nonfinite = False
  c.worker_count = 0  # Worker processes (0: the main process does the work).
  c.worker_buffer_size = 2  # Batches each worker prepares ahead.
  c.read_threads = 2  # Threads per process preparing elements in parallel.
  c.read_buffer_size = 16  # Elements prepared ahead per process.
  c.task = tasks.options()
  return c


def paper() -> ml_collections.ConfigDict:
  """Pipeline settings with the paper's tasks, weighted by their examples (PAPER_EXAMPLES)."""
  c = pipeline("image")
  for name in c.task_weights:
    c.task_weights[name] = float(PAPER_EXAMPLES.get(name, 0))
  return c


def paper_sources() -> ml_collections.ConfigDict:
  """{data set: ''} for the paper's data sets: set each held to a source spec."""
  return ml_collections.ConfigDict({name: "" for name in PAPER_DATA_SETS})


def latents() -> ml_collections.ConfigDict:
  """Settings of the stored ST-VAE latents (lavin_jax.data.latents)."""
  c = ml_collections.ConfigDict()
  c.dir = ""  # The shard set; '' is <workdir>/latents.
  # Renderings stored per example: view 0 is the centred crop of the first frames;
  # further views draw a frame window and (with random_crop) a crop.
  c.views = 1
  c.seed = 0  # Of the views' random draws (crops, windows, degradations).
  c.examples_per_shard = 256
  c.batch_size = 16  # Clips per ST-VAE call while encoding.
  return c
