"""nnU-Net's file naming, checked: images are CASE_XXXX<ending> (XXXX: the channel, 0000 first). nnU-Net's own
listing slices names by length, so a file without the channel suffix gives an IndexError far away and a case
that has only _0001 is read with _0001 as its first channel; here both are named before anything runs."""
from __future__ import annotations

import os
import re
from collections import defaultdict
from typing import Dict, Optional, Set


def channels_per_case(folder: str, file_ending: str, error: type, where: str) -> Dict[str, Set[int]]:
    """{case: channel numbers} of the files in `folder` that end in `file_ending`; a misnamed file raises `error`."""
    pattern = re.compile(r"^(.+)_(\d{4})" + re.escape(file_ending) + "$")
    found: Dict[str, Set[int]] = defaultdict(set)
    for name in sorted(os.listdir(folder)):
        if not name.endswith(file_ending):
            continue
        match = pattern.match(name)
        if match is None:
            raise error(f"{where}/{name} is not named CASE_XXXX{file_ending} (XXXX: the channel number, 0000 for "
                        f"the first); rename it, e.g. to {name[:-len(file_ending)]}_0000{file_ending}")
        found[match.group(1)].add(int(match.group(2)))
    return dict(found)


def channel_gap(case: str, channels: Set[int], file_ending: str, num_channels: Optional[int] = None) -> Optional[str]:
    """The first missing channel file of `case` (channels 0..num_channels-1, or 0..its highest), or None."""
    expected = set(range(num_channels if num_channels is not None else max(channels) + 1))
    missing = sorted(expected - channels)
    return f"{case}_{missing[0]:04d}{file_ending}" if missing else None
