"""The agent registry (agents/registry.py): every agent name the studies, the run matrix and the
hyperparameter file use is registered, each entry names code that exists and trains that agent,
and an unknown name is one clear error."""

from __future__ import annotations

import importlib

import pytest

from agents import registry
from agents.base import Agent
from agents.cli import parse_args
from runs.matrix import POLICIES, policy_agent_args, with_paper_gates
from runs.studies import load_config
from runs.studies.tune import GRID


def _names_in_use() -> dict[str, set[str]]:
    """Every agent name each user of the registry names, by user."""
    used: dict[str, set[str]] = {"matrix policies": {agent for agent, _ in POLICIES.values()}, "tune grid": set(GRID)}
    for quick in (False, True):
        bench = load_config("benchmark", quick)
        used.setdefault("benchmark", set()).update(bench["agents"], bench["extra_mode_agents"])
        for study in ("tune", "tune-cnf"):
            config = load_config(study, quick)
            used.setdefault(study, set()).update(config["agents"], config["grid"], config["base_overrides"])
    for task, entry in registry.hyperparams().items():
        used[f"hyperparameters of {task}"] = set(entry)
    return used


def test_every_agent_name_in_use_is_registered():
    for user, names in _names_in_use().items():
        assert names, user
        unknown = names - set(registry.AGENTS)
        assert not unknown, f"{user} names unregistered agents {sorted(unknown)}"


def test_an_unknown_agent_is_one_error_listing_the_valid_ones():
    with pytest.raises(ValueError, match=r"^unknown agent 'dqn'; valid: fixed, reinforce, ppo, a2c, sac, td3$"):
        registry.get("dqn")
    with pytest.raises(ValueError, match=r"^unknown agent 'sb3-dqn' in a run's config.json; valid: fixed, "
                                         r"reinforce, sb3-ppo, sb3-a2c, sb3-sac, sb3-td3$"):
        registry.of_run("sb3-dqn")
    with pytest.raises(ValueError, match=r"^agent 'fixed' has no benchmark flags; agents with them: reinforce, ppo"):
        registry.default_flags("fixed")
    assert registry.trainer_of("sb3-dqn") is None


@pytest.mark.parametrize("name", list(registry.AGENTS))
def test_each_entry_names_its_trainer_its_agent_class_and_the_flags_that_select_it(name):
    entry = registry.get(name)
    assert entry.name == name
    trainer = importlib.import_module(entry.module)
    assert callable(trainer.main), f"{entry.module} has no CLI"
    cls = entry.agent_class()
    assert issubclass(cls, Agent) and cls.__module__ == entry.module
    assert cls.saved_policy.__func__ is not Agent.saved_policy.__func__, "no policy loader of its own"
    args = parse_args(trainer.Args, list(entry.selector))
    if entry.trainer == "sb3":
        assert args.algo == name and entry.run_name == f"sb3-{name}"  # what agents.sb3 records for --algo NAME
    else:
        assert entry.selector == () and entry.run_name == name == entry.trainer
    assert registry.of_run(entry.run_name) is entry and registry.trainer_of(entry.run_name) == entry.trainer
    if entry.default_flags is not None:
        assert entry.default_flags[: len(entry.selector)] == entry.selector
        assert entry.lr_flag is not None and entry.default_lr is not None
        tuned = parse_args(trainer.Args, [*entry.default_flags, entry.lr_flag, "0.0123"])
        assert getattr(tuned, entry.lr_flag.lstrip("-").replace("-", "_")) == pytest.approx(0.0123)
        given = parse_args(trainer.Args, list(entry.default_flags))
        if entry.lr_flag in entry.default_flags:  # the default flags set it: to the default the tune grid uses
            assert getattr(given, entry.lr_flag.lstrip("-").replace("-", "_")) == pytest.approx(entry.default_lr)


def test_names_run_names_and_colours_are_unique():
    entries = list(registry.AGENTS.values())
    for field in ("name", "run_name", "colour"):
        values = [getattr(e, field) for e in entries]
        assert len(set(values)) == len(values), field


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_a_digits_policy_runs_its_agents_trainer_with_the_agents_selector_first(policy):
    module, flags = policy_agent_args(policy)
    entry = registry.get(POLICIES[policy][0])
    assert module == entry.trainer and flags[: len(entry.selector)] == list(entry.selector)
    assert policy_agent_args(policy, ["--x"]) == (entry.trainer, [*entry.selector, "--x"])


def test_a_task_without_a_tuned_entry_runs_the_agents_default_flags():
    tuned = registry.hyperparams()
    assert registry.agent_flags("ODE-Mixed-v0", "ppo") == tuned["ODE-Mixed-v0"]["ppo"]
    assert registry.agent_flags("ODE-Lorenz-v0", "ppo") == registry.default_flags("ppo") == [
        "--algo", "ppo", "--normalize-reward", "--init-std", "0.5"]
    with pytest.raises(ValueError, match="unknown agent 'dqn'"):
        registry.agent_flags("ODE-Mixed-v0", "dqn")


def test_a_command_finds_the_agent_its_trainer_and_selector_name():
    assert registry.of_command("sb3", ["--algo", "a2c", "--normalize-reward"]).name == "a2c"
    assert registry.of_command("sb3", ["--normalize-reward", "--algo", "td3"]).name == "td3"
    assert registry.of_command("reinforce", []).name == "reinforce"
    assert registry.of_command("sb3", ["--algo", "dqn"]) is None


def test_studies_run_reinforce_with_the_papers_gaussian_gates_unless_a_run_picks_its_own():
    assert with_paper_gates("reinforce", ["--gate-lr", "0.01"]) == ["--gate-dist", "gaussian", "--gate-lr", "0.01"]
    assert with_paper_gates("reinforce", ["--gate-dist", "squashed"]) == ["--gate-dist", "squashed"]
    assert with_paper_gates("sb3", ["--algo", "ppo"]) == ["--algo", "ppo"]
    assert with_paper_gates("fixed", ["--tol", "1e-5"]) == ["--tol", "1e-5"]


@pytest.mark.parametrize("name", ["fixed", "reinforce"])
def test_an_episode_agent_is_built_for_an_env_from_its_entry(name):
    import gymnasium as gym

    import infocnf_env  # noqa: F401

    cls = registry.get(name).agent_class()
    env = gym.make("InfoCNF-Toy1D-v0", **cls.env_kwargs("InfoCNF-Toy1D-v0"))
    agent = cls.for_env(env, seed=0, tol=1e-4)
    obs, _ = env.reset(seed=0)
    action = agent.act(obs)
    assert env.action_space.contains(action.astype(env.action_space.dtype))
    if name == "fixed":
        assert action[0] == pytest.approx(-4.0)


def test_reinforce_asks_its_env_for_the_observation_its_gates_read():
    reinforce = registry.get("reinforce").agent_class()
    assert reinforce.env_kwargs("InfoCNF-CIFAR10-v0") == {"obs_mode": "features"}  # the paper's CNN gates
    assert reinforce.env_kwargs("InfoCNF-Digits-v0") == {"obs_mode": "vector"}
    assert registry.get("fixed").agent_class().env_kwargs("InfoCNF-CIFAR10-v0") == {}


def test_an_agent_that_drives_the_env_itself_has_no_episode_agent():
    assert [n for n, e in registry.AGENTS.items() if e.agent_class().plays_episodes()] == ["fixed", "reinforce"]
    with pytest.raises(NotImplementedError, match="drives the env itself"):
        registry.get("ppo").agent_class().for_env(None, seed=0, tol=1e-5)
