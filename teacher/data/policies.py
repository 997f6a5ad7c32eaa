"""Data-collection policies for `python -m teacher.data.collect`: name -> class in POLICIES.

A policy acts on one env of the contract in envs/base.py, in a worker process, one episode at a time:

    policy = POLICIES[name](env, noise, rng, options)   # once per episode, after env is built
    policy.reset(obs)                                   # obs = env.reset()
    action = policy(obs)        # (native,) float32: the action to EXECUTE (noise added, clipped to [-1, 1])
    obs = env.step(pad(action))
    stored = policy.executed(action, obs)               # (native,) what the simulator really executed

`act(obs)` returns the clean action; `__call__` adds Gaussian noise N(0, noise^2) per dim and clips
(GSA's mixed-quality recipe; noise 0 = the clean policy). To add a policy: subclass Policy, set
`suites` (the suites it runs on; None = any) and implement act(); register it in POLICIES.
Nothing here imports torch at module level: only AgentPolicy does, inside the worker that uses it.
"""
from __future__ import annotations

import pathlib

import numpy as np


class Policy:
    suites: tuple | None = None   # suites this policy can act on (None: any)
    needs_torch = False           # True: workers import torch (only the `agent` policy)

    def __init__(self, env, noise: float, rng: np.random.Generator, options: dict):
        self.env, self.spec, self.noise, self.rng, self.options = env, env.spec, float(noise or 0.0), rng, options
        self.dim = self.spec.native_action_dim

    @classmethod
    def check(cls, suite: str, options: dict) -> None:
        """Raises ValueError (said to the user) when the policy cannot run on this suite / options."""
        if cls.suites is not None and suite not in cls.suites:
            name = next(k for k, v in POLICIES.items() if v is cls)
            raise ValueError(f"policy {name!r} runs on suite(s) {', '.join(cls.suites)}, not {suite!r}; "
                             f"--policy random runs on any suite")

    @classmethod
    def env_config(cls, env_cfg: dict, noise: float) -> dict:
        """The env config of one (noise) setting; e.g. CARLA's autopilot switch."""
        return env_cfg

    @classmethod
    def label(cls, options: dict) -> str:
        """Extra text for job ids, to tell data of two otherwise equal policies apart ("" if none)."""
        return ""

    def reset(self, obs: dict) -> None:
        pass

    def act(self, obs: dict) -> np.ndarray:
        """(native,) clean action in [-1, 1]."""
        raise NotImplementedError

    def __call__(self, obs: dict) -> np.ndarray:
        action = np.asarray(self.act(obs), np.float64).reshape(self.dim)
        if self.noise > 0:
            action = action + self.rng.normal(0.0, self.noise, self.dim)
        return np.clip(action, -1.0, 1.0).astype(np.float32)

    def executed(self, action: np.ndarray, obs: dict) -> np.ndarray:
        """(native,) the action the simulator really ran for this step (default: what was sent)."""
        return action


class RandomPolicy(Policy):
    """Uniform in [-1, 1] on the native dims (any suite); --noise adds Gaussian noise on top."""

    def act(self, obs):
        return self.rng.uniform(-1.0, 1.0, self.dim)


class ExpertPolicy(Policy):
    """Meta-World's scripted expert of the task (metaworld.policies) on the env's 39-d state."""
    suites = ("metaworld",)

    def __init__(self, env, noise, rng, options):
        super().__init__(env, noise, rng, options)
        import warnings  # noqa: PLC0415
        from metaworld.policies import ENV_POLICY_MAP  # noqa: PLC0415 (the env has imported metaworld)
        warnings.filterwarnings("ignore", "Constant.s. may be too high")  # its gains saturate; we clip
        self.expert = ENV_POLICY_MAP[f"{self.spec.task}-v3"]()

    def act(self, obs):
        return np.clip(self.expert.get_action(self.env.state), -1.0, 1.0)  # (4,) xyz delta + grip


class DriverPolicy(Policy):
    """Heuristic driver for the local driving suite (envs/driving.py): pure-pursuit steering to the
    lane centre `lookahead` ahead, and a speed controller that keeps a scenario cruise speed and
    slows down behind a car in front (2 s headway)."""
    suites = ("driving",)
    CRUISE = dict(highway=25.0, merge=22.0, racetrack=9.0, roundabout=7.0, carracing=22.0)  # m/s
    ACCEL = 5.0  # m/s^2 of a full throttle/brake command (highway-env)

    def act(self, obs):
        speed = max(self.env.driver_view(0.0)["speed"], 0.0)
        lookahead = max(6.0, 0.6 * speed)  # m; further ahead when faster
        view = self.env.driver_view(lookahead)
        # pure pursuit: the wheel angle that puts the car on a circle through the target point
        wheel = np.arctan2(2.0 * view["wheelbase"] * np.sin(view["target_angle"]), lookahead)
        steer = wheel / view["steer_rad"]
        cruise = self.CRUISE.get(self.spec.task, 15.0)
        if np.isfinite(view["gap"]):  # follow the car ahead: its speed, less when closer than 2 s
            cruise = min(cruise, view["gap_speed"] + (view["gap"] - 2.0 * speed - 5.0) / 2.0)
        cruise *= 1.0 - 0.5 * min(abs(view["target_angle"]) / 0.5, 1.0)  # slow into sharp turns
        throttle = (cruise - speed) / self.ACCEL
        return np.clip([steer, throttle], -1.0, 1.0)


class AutopilotPolicy(Policy):
    """CARLA's Traffic-Manager autopilot drives (env autopilot=true, configs/env/carla_source.yaml);
    the action sent is ignored and obs["log_action"] (what the car executed) is stored. --noise sets
    the std of the env's noise bursts (steer_noise, throttle_noise); 0 = clean autopilot."""
    suites = ("carla",)

    @classmethod
    def env_config(cls, env_cfg, noise):
        cfg = dict(env_cfg, autopilot=True)
        if noise is not None:
            cfg.update(steer_noise=float(noise), throttle_noise=float(noise))
            if noise == 0:
                cfg["noise_prob"] = 0.0
        return cfg

    def act(self, obs):
        return np.zeros(self.dim)

    def __call__(self, obs):
        return self.act(obs).astype(np.float32)  # noise comes from the env's bursts, not from here

    def executed(self, action, obs):
        return np.asarray(obs["log_action"], np.float32)[: self.dim]


class AgentPolicy(Policy):
    """A trained agent of a `python -m transfer.run` run directory (options["agent_run"]): the mode
    of its actor (explore=False) plus Gaussian noise; the executed action is fed back to its RSSM."""
    needs_torch = True

    @classmethod
    def check(cls, suite, options):
        run = options.get("agent_run")
        if not run or not (pathlib.Path(run) / "checkpoint.pt").is_file():
            raise ValueError(f"--policy agent needs --agent-run RUN_DIR holding a checkpoint.pt of "
                             f"`python -m transfer.run`; got {run!r}")

    @classmethod
    def label(cls, options):
        return pathlib.Path(options["agent_run"]).resolve().name

    def __init__(self, env, noise, rng, options):
        super().__init__(env, noise, rng, options)
        import torch  # noqa: PLC0415 (only workers of the agent policy pay for torch)
        self.torch = torch
        torch.set_num_threads(1)
        torch.manual_seed(int(rng.integers(2 ** 31)))
        self.agent = load_agent(options["agent_run"], env.spec)

    def reset(self, obs):
        self.state = self.agent.initial_state(1)

    def act(self, obs):
        batch = {"image": obs["image"][None], "is_first": np.array([obs["is_first"]])}  # (1, R, R, 3), (1,)
        action, self.state = self.agent.policy(batch, self.state, explore=False)  # (1, A) padded
        return action[0, : self.dim]

    def __call__(self, obs):
        action = super().__call__(obs)
        padded = np.zeros((1, self.spec.max_action_dim), np.float32)  # (1, A)
        padded[0, : self.dim] = action
        self.state["action"] = self.torch.as_tensor(padded, device=self.agent.device)  # what was executed
        return action


def load_agent(run_dir, spec):
    """core.agent.Agent rebuilt from RUN_DIR/checkpoint.pt (its saved config), on CPU, eval mode."""
    import torch  # noqa: PLC0415
    from omegaconf import OmegaConf  # noqa: PLC0415

    from core import checkpoint  # noqa: PLC0415
    from core.agent import Agent  # noqa: PLC0415
    state = checkpoint.load(pathlib.Path(run_dir) / "checkpoint.pt")
    cfg = OmegaConf.create(state["config"])
    cfg.model.compile = False
    if spec.max_action_dim != cfg.max_action_dim:
        raise ValueError(f"agent {run_dir} acts with max_action_dim {cfg.max_action_dim}, the env has "
                         f"{spec.max_action_dim}")
    size = spec.image_size
    agent = Agent({"image": (size, size, 3)}, spec.action_mask, cfg.model, torch.device("cpu"))
    # modules that components attached for training (e.g. an exploration ensemble) do not act: skipped
    missing, _ = agent.load_state_dict(state["agent"]["model"], strict=False)
    if missing:
        raise ValueError(f"{run_dir}/checkpoint.pt lacks parameters of the agent its config builds "
                         f"({', '.join(missing[:5])} ...); was it written by another code version?")
    return agent.eval()


def run_config(run_dir) -> dict:
    """The saved config of a transfer.run run directory (without loading the model)."""
    import torch  # noqa: PLC0415
    return torch.load(pathlib.Path(run_dir) / "checkpoint.pt", map_location="cpu", weights_only=False)["config"]


POLICIES = {"expert": ExpertPolicy, "random": RandomPolicy, "driver": DriverPolicy,
            "autopilot": AutopilotPolicy, "agent": AgentPolicy}
