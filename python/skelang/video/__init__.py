"""Videos to skeletons: MediaPipe's BlazePose (TFLite models shipped with skelang, run by
ai-edge-litert) with multi-person tracking, and the result as a skelang Sequence in the
blazepose33 layout (skelang.video.extract); `skelang data extract` and `skelang predict`
build on it. Needs `pip install 'skelang[video]'` (ai-edge-litert, opencv-python-headless).
"""

from skelang.video.extract import PoseTrack, VideoError, extract_poses, read_frames, video_info

__all__ = ["PoseTrack", "VideoError", "extract_poses", "read_frames", "video_info"]
