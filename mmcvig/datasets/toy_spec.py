"""What the toy detection and segmentation sets are made from: the same six numbers,
validated alike and recorded in the data set's manifest."""
from dataclasses import asdict, dataclass
from typing import ClassVar, Tuple


@dataclass(frozen=True)
class ToySpec:
    """What a toy data set is made from; its manifest records exactly this.

    Subclasses give the defaults and, as class variables, ``CLASSES``,
    ``FORMAT_VERSION`` (bumped when the drawing changes, so that an old data set is not
    taken for a new one) and ``SMALLEST_SIDE`` (the least ``min_side`` that fits the
    objects).
    """
    CLASSES: ClassVar[Tuple[str, ...]]
    FORMAT_VERSION: ClassVar[int]
    SMALLEST_SIDE: ClassVar[int]

    num_train: int
    num_val: int
    seed: int
    min_side: int
    max_side: int
    max_objects: int

    def __post_init__(self):
        if self.num_train < 1 or self.num_val < 1:
            raise ValueError(f'num_train and num_val must be >= 1, got {self.num_train}, '
                             f'{self.num_val}')
        if not self.SMALLEST_SIDE <= self.min_side <= self.max_side:
            raise ValueError(f'need {self.SMALLEST_SIDE} <= min_side <= max_side, got '
                             f'{self.min_side}, {self.max_side}')
        if self.max_objects < 1:
            raise ValueError(f'max_objects must be >= 1, got {self.max_objects}')

    def num_images(self, split: str) -> int:
        return {'train': self.num_train, 'val': self.num_val}[split]

    def manifest(self) -> dict:
        return dict(format=self.FORMAT_VERSION, classes=list(self.CLASSES), **asdict(self))
