"""The Jupyter kernel manager papermill runs campaign notebooks with (lab.campaign.run_campaign)."""
from jupyter_client.manager import AsyncKernelManager


class QuietKernelManager(AsyncKernelManager):
    """jupyter_client interrupts (SIGINT) a kernel before shutting it down, and an idle ipykernel then logs a false
    "ERROR | KeyboardInterrupt caught in kernel." after every successful notebook: skip that one interrupt."""

    async def _async_interrupt_kernel(self) -> None:
        if not self.shutting_down:
            await super()._async_interrupt_kernel()
