# Type stub of the lazily loaded package (leukcore/__init__.py loads these on first use): IDEs and type
# checkers see the public names without importing torch or dask.
from . import batch as batch
from . import classify as classify
from . import cli as cli
from . import detect as detect
from . import device as device
from . import export as export
from . import field as field
from . import io as io
from . import models as models
from . import mpp as mpp
from . import pipeline as pipeline
from . import progress as progress
from . import results as results
from . import sample as sample
from . import testing as testing
from . import tiling as tiling
from . import train as train
from ._version import __version__ as __version__
from .batch import run_batch as run_batch
from .classify import classify_cells as classify_cells
from .detect import detect_cells as detect_cells
from .device import resolve_device as resolve_device
from .field import classify_image as classify_image
from .io import Slide as Slide
from .io import SlideError as SlideError
from .io import open_slide as open_slide
from .io import write_slide as write_slide
from .pipeline import analyze_slide as analyze_slide
from .pipeline import iter_analyze as iter_analyze
from .progress import Cancelled as Cancelled
from .progress import CancelToken as CancelToken
from .progress import ProgressEvent as ProgressEvent
from .results import CellTable as CellTable

__all__: list[str]
