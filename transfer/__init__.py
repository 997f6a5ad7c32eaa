"""Entry point (`python -m transfer.run`) and the ONE training loop; methods are configurations; reports in transfer/report/."""
