"""Resource tiers for container workspaces. Unknown tiers get tier 2, the default."""

from __future__ import annotations

from dataclasses import dataclass, replace

CPU_SHARES_PER_CPU = 1024
DEFAULT_TIER = 2


@dataclass(frozen=True)
class TierLimits:
    tier: int
    memory_mb: int
    cpu_shares: int  # Docker's relative weight: 1024 per CPU
    read_only_root: bool = False
    tmpfs_mb: int | None = None  # tmpfs on /tmp, for a read-only root
    host_network: bool = False

    @property
    def cpus(self) -> float:
        return self.cpu_shares / CPU_SHARES_PER_CPU


TIERS: dict[int, TierLimits] = {
    1: TierLimits(1, memory_mb=256, cpu_shares=512, read_only_root=True, tmpfs_mb=64),
    2: TierLimits(2, memory_mb=512, cpu_shares=1024),
    3: TierLimits(3, memory_mb=2048, cpu_shares=2048),
    4: TierLimits(4, memory_mb=4096, cpu_shares=4096, host_network=True),
}


def tier_limits(tier: int | None, overrides: dict[int, tuple[int | None, int | None]]) -> TierLimits:
    """The limits for `tier` with TIER<n>_MEMORY_MB / TIER<n>_CPU_SHARES applied."""
    base = TIERS.get(tier if tier is not None else DEFAULT_TIER, TIERS[DEFAULT_TIER])
    memory_mb, cpu_shares = overrides.get(base.tier, (None, None))
    return replace(base, memory_mb=memory_mb or base.memory_mb, cpu_shares=cpu_shares or base.cpu_shares)
