-- Argo CD health check for rollwise.dev/ModelDeployment.
-- Install: argocd-cm key `resource.customizations.health.rollwise.dev_ModelDeployment` (docs/gitops.md).
--
-- Argo CD runs this in its sandbox: Lua 5.1, base and table libraries only (no `string`), the live
-- object in the global `obj`; it reads `status` and `message` from the returned table.
--
--   the operator has not seen the latest spec (observedGeneration behind)  -> Progressing
--   RolledBack, RollingBack, Invalid, Degraded, or Stalled=True            -> Degraded
--     (the stable may well be serving, but the desired version is not and will not be
--      without a change: that is what a GitOps user must see)
--   ModelHealthy=False (spec.monitoring found the stable model degraded)   -> Degraded
--   Paused (a pause step, a manual gate or an inconclusive analysis)       -> Suspended
--   Healthy with Ready=True                                                -> Healthy
--   anything else (Pending, Progressing, Promoting)                        -> Progressing
local hs = {}

local function text(value)
  if value == nil then
    return ""
  end
  return tostring(value)
end

local function condition(status, kind)
  if status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

-- "candidate 2.0.0 at 50%": where a rollout stands, or "" outside one (the operator's message
-- names the step).
local function rollout(status)
  if status.candidateVersion == nil then
    return ""
  end
  return "candidate " .. text(status.candidateVersion) .. " at " .. text(status.weight or 0) .. "%"
end

local function join(...)
  local parts = {}
  for i = 1, select("#", ...) do
    local part = select(i, ...)
    if part ~= nil and part ~= "" then
      table.insert(parts, part)
    end
  end
  return table.concat(parts, ": ")
end

local status = obj.status
if status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the Rollwise operator to report status"
  return hs
end

local generation = obj.metadata.generation
if generation ~= nil and status.observedGeneration ~= generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the Rollwise operator to observe generation " .. text(generation)
    .. " (status describes generation " .. text(status.observedGeneration or "none") .. ")"
  return hs
end

local phase = text(status.phase)
local stalled = condition(status, "Stalled")
local ready = condition(status, "Ready")
local model = condition(status, "ModelHealthy")

if phase == "RolledBack" or phase == "RollingBack" then
  local candidate = "the candidate"
  if status.candidateVersion ~= nil then
    candidate = "candidate " .. text(status.candidateVersion)
  end
  local what = candidate .. " rolled back"
  if phase == "RollingBack" then
    what = "rolling back " .. candidate
  end
  -- Why: the newest history entry is this rollout's end (outcome and reason), else the message.
  local why = status.message
  if status.history ~= nil and status.history[1] ~= nil then
    local outcome = status.history[1].outcome
    if outcome == phase then
      outcome = nil
    end
    why = join(outcome, status.history[1].message)
  end
  hs.status = "Degraded"
  hs.message = join(phase, what, why)
  if status.stableVersion ~= nil then
    hs.message = hs.message .. "; stable " .. text(status.stableVersion) .. " serves all traffic"
  end
elseif stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = join(phase, stalled.reason, stalled.message)
elseif phase == "Invalid" or phase == "Degraded" then
  hs.status = "Degraded"
  hs.message = join(phase, status.message)
elseif model ~= nil and model.status == "False" then
  hs.status = "Degraded"
  hs.message = join(phase, model.reason, model.message)
elseif phase == "Paused" then
  hs.status = "Suspended"
  hs.message = join(phase, rollout(status), status.message)
elseif phase == "Healthy" and ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = join("stable " .. text(status.stableVersion), status.message)
else
  hs.status = "Progressing"
  hs.message = join(phase, rollout(status), status.message)
end
return hs
