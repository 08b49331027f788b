"""The Jupyter kernel manager papermill runs campaign notebooks with (lab.campaign.run_campaign)."""
from jupyter_client.manager import AsyncKernelManager


class QuietKernelManager(AsyncKernelManager):
    """A local kernel over IPC sockets (files in the Jupyter runtime dir, readable by this user only) rather than
    unencrypted TCP, so ipykernel has no "running over TCP without encryption" warning to print. And jupyter_client
    interrupts (SIGINT) a kernel before shutting it down, after which an idle ipykernel logs a false "ERROR |
    KeyboardInterrupt caught in kernel." after every successful notebook: skip that one interrupt."""

    def __init__(self, **kw):
        kw.setdefault("transport", "ipc")
        super().__init__(**kw)

    async def _async_interrupt_kernel(self) -> None:
        if not self.shutting_down:
            await super()._async_interrupt_kernel()
