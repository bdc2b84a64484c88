"""`kubectl rollwise`: watch and steer ModelDeployment rollouts from a terminal or a CI job.

The plugin is a client like kubectl: it reads ModelDeployments and their Events through the
Kubernetes API and steers rollouts only through the `rollwise.dev/action` annotation the operator
already obeys. It never imports the operator's Kopf wiring or its API-writing code (an
import-linter contract says so); it shares the API types and the pure step list with it, so
"step 3" means the same step to both.

- `main.py`: arguments, commands, exit codes.
- `client.py`: the only module that talks to the API server.
- `outcome.py`: pure: has a rollout ended, how, and does an action apply now.
- `view.py`: pure: a ModelDeployment, its Events and the time -> rich renderables.
- `live.py`: redraws a view until a rollout ends (rich Live on a terminal, lines otherwise).
"""
